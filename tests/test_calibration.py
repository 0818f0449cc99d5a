"""Adaptive conformal inference: update rule, convergence under misspecification, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from forecaster.calibration import AciState, run_aci
from forecaster.distribution import ReturnDistribution
from forecaster.econometric import fit_ewma
from forecaster.features import log_returns
from tests.forecaster_support import btc_arrays


def test_update_rule_by_hand() -> None:
    s = AciState(target=0.9, gamma=0.01)
    assert s.alpha_t == pytest.approx(0.1) and s.level == pytest.approx(0.9)
    s = s.update(-1.0, 1.0, 2.0)  # miss: alpha -= 0.01 * 0.9
    assert s.alpha_t == pytest.approx(0.091) and (s.n, s.misses) == (1, 1)
    s = s.update(-1.0, 1.0, 0.5)  # hit: alpha += 0.01 * 0.1
    assert s.alpha_t == pytest.approx(0.092) and (s.n, s.misses) == (2, 1)
    assert s.level == pytest.approx(0.908) and s.coverage == pytest.approx(0.5)
    assert s.update(-1.0, 1.0, math.nan) is s  # no outcome, no change


def test_level_is_clipped_but_alpha_keeps_the_count() -> None:
    s = AciState(target=0.9, gamma=0.05)
    for _ in range(100):
        s = s.update(0.0, 0.0, 1.0)
    assert s.level == pytest.approx(0.995) and s.alpha_t < -1.0
    dist = ReturnDistribution.of(0.0, 1.0)
    lo, hi = s.interval(dist)
    assert np.isfinite(lo).all() and np.isfinite(hi).all() and hi[0] > 2.5


def test_round_trips_through_json() -> None:
    s = AciState(target=0.8, gamma=0.02).update(-1, 1, 3).update(-1, 1, 0)
    back = AciState.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert back == s and AciState.from_dict({}) == AciState()
    with pytest.raises(ValueError):
        AciState(target=1.2)


def test_coverage_converges_on_a_misspecified_distribution() -> None:
    # Outcomes: Student-t(3) whose scale jumps 3x halfway; the model: a Gaussian that never
    # moves. Its raw 90 % interval covers far from 90 % in each half; ACI brings it back.
    rng = np.random.default_rng(11)
    n = 8000
    scale = np.where(np.arange(n) < n // 2, 0.01, 0.03)
    y = rng.standard_t(3, n) * scale
    dist = ReturnDistribution.of(np.zeros(n), np.full(n, 0.025))
    raw_lo, raw_hi = dist.interval(0.9)
    raw = (y >= raw_lo) & (y <= raw_hi)
    assert raw[: n // 2].mean() > 0.96 and raw[n // 2 :].mean() < 0.75
    lo, hi, level, final = run_aci(dist, y, AciState(target=0.9, gamma=0.01))
    hit = (y >= lo) & (y <= hi)
    assert hit.mean() == pytest.approx(0.9, abs=0.01)
    assert hit[n // 2 :].mean() == pytest.approx(0.9, abs=0.02)  # after the shift too
    assert level[n // 2 - 1] < 0.9 < level[-1]  # narrowed, then widened
    assert final.n == n and final.misses == int((~hit).sum())


def test_on_real_returns_with_ewma() -> None:
    r = log_returns(btc_arrays(3000))
    m = fit_ewma(r[:1000])
    dist, _ = m.forecast(r[1000:])
    y = r[1000:]
    ok = np.isfinite(y)
    lo, hi, _, final = run_aci(dist, y, AciState(target=0.9, gamma=0.01))
    cover = ((y >= lo) & (y <= hi))[ok].mean()
    assert cover == pytest.approx(0.9, abs=0.02) and final.n == ok.sum()


def test_no_look_ahead() -> None:
    rng = np.random.default_rng(2)
    n, t = 1000, 600
    y = rng.standard_normal(n) * 0.012
    dist = ReturnDistribution.of(np.zeros(n), np.full(n, 0.01))
    lo, hi, level, _ = run_aci(dist, y, AciState(gamma=0.02))
    y2 = y.copy()
    y2[t:] = rng.standard_normal(n - t) * 0.001  # outcomes from t on: all inside
    lo2, hi2, level2, _ = run_aci(dist, y2, AciState(gamma=0.02))
    # The interval at t depends on outcomes < t only.
    np.testing.assert_array_equal(lo[: t + 1], lo2[: t + 1])
    np.testing.assert_array_equal(hi[: t + 1], hi2[: t + 1])
    np.testing.assert_array_equal(level[: t + 1], level2[: t + 1])
    assert not np.allclose(level[t + 1 :], level2[t + 1 :])


def test_step_by_step_equals_the_batch_run() -> None:
    # What serving does, one candle at a time through a JSON round trip, equals run_aci.
    rng = np.random.default_rng(4)
    y = rng.standard_t(4, 300) * 0.01
    dist = ReturnDistribution.of(np.zeros(300), np.full(300, 0.008), 5.0)
    lo, hi, _, final = run_aci(dist, y, AciState(gamma=0.01))
    s = AciState(gamma=0.01)
    for i in range(300):
        a, b = s.interval(dist.take(slice(i, i + 1)))
        assert (a[0], b[0]) == (lo[i], hi[i])
        s = AciState.from_dict(orjson.loads(orjson.dumps(s.update(a[0], b[0], y[i]).to_dict())))
    assert s == final

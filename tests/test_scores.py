"""Distribution scores (log-return space) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from forecaster.distribution import ReturnDistribution
from forecaster.metrics import (
    brier_score,
    christoffersen_independence,
    crps,
    pinball_loss,
    qlike,
    trailing_volatility,
    volatile_mask,
    winkler_score,
)


def test_crps_of_a_gaussian_at_its_mean() -> None:
    # CRPS(N(0, s), 0) = s (2 phi(0) - 1/sqrt(pi)) = s (sqrt(2/pi) - 1/sqrt(pi)).
    d = ReturnDistribution.of([0.0, 0.0], [0.01, 0.02])
    expect = (0.01 + 0.02) / 2 * (math.sqrt(2 / math.pi) - 1 / math.sqrt(math.pi))
    assert crps(d, np.array([0.0, 0.0])) == pytest.approx(expect)
    # Far from the distribution the CRPS tends to the absolute error.
    assert crps(ReturnDistribution.of(0.0, 1e-6), np.array([0.5])) == pytest.approx(0.5, rel=1e-4)


def test_pinball_by_hand() -> None:
    q = np.array([[-1.0, 0.0, 1.0]])
    levels = (0.1, 0.5, 0.9)
    # y = 2: above all three: 0.1*3 + 0.5*2 + 0.9*1 = 2.2, mean 2.2/3
    assert pinball_loss(q, np.array([2.0]), levels) == pytest.approx(2.2 / 3)
    # y = -1: on q0 (0), below q1 by 1 (0.5), below q2 by 2 (0.1*2) -> 0.7 / 3
    assert pinball_loss(q, np.array([-1.0]), levels) == pytest.approx(0.7 / 3)


def test_winkler_by_hand() -> None:
    lo, hi = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])
    y = np.array([0.0, 2.0, -1.5])
    # width 2 each; alpha = 0.2: penalties 0, 10 * 1, 10 * 0.5
    assert winkler_score(lo, hi, y, 0.8) == pytest.approx((2 + 12 + 7) / 3)
    assert winkler_score(lo, hi, np.array([0.0]), 0.9) == pytest.approx(2.0)


def test_qlike_is_minimised_by_the_true_variance() -> None:
    rng = np.random.default_rng(1)
    y = rng.standard_normal(200_000) * 0.02
    scores = {h: qlike(np.full(y.size, h), y) for h in (0.0002, 0.0004, 0.0008)}
    assert min(scores, key=scores.__getitem__) == 0.0004
    assert qlike(np.array([1.0]), np.array([0.0])) == 0.0  # log 1 + 0
    assert qlike(np.array([math.e]), np.array([0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        qlike(np.array([0.0]), np.array([0.1]))


def test_brier_by_hand() -> None:
    y = np.array([0.01, -0.01, 0.0, 0.02])
    assert brier_score(np.full(4, 0.5), y) == pytest.approx(0.25)
    # outcomes 1, 0, 0, 1
    assert brier_score(np.array([1.0, 0.0, 0.2, 0.6]), y) == pytest.approx(
        (0 + 0 + 0.04 + 0.16) / 4
    )


def test_christoffersen_by_hand() -> None:
    miss = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    # transitions: 00: 4, 01: 2, 10: 2, 11: 1
    c = christoffersen_independence(miss)
    p01, p11, p = 2 / 6, 1 / 3, 3 / 9
    ll0 = 6 * math.log(1 - p) + 3 * math.log(p)
    ll1 = 4 * math.log(1 - p01) + 2 * math.log(p01) + 2 * math.log(1 - p11) + math.log(p11)
    assert c.lr == pytest.approx(-2 * (ll0 - ll1), abs=1e-12)
    assert c.p_miss_after_miss == pytest.approx(1 / 3) and c.p_miss_after_hit == pytest.approx(
        1 / 3
    )
    assert c.lr == pytest.approx(0.0, abs=1e-12)  # p01 == p11: no evidence of clustering


def test_christoffersen_detects_clustered_misses() -> None:
    rng = np.random.default_rng(0)
    independent = rng.random(5000) < 0.1
    assert christoffersen_independence(independent).lr < 3.84
    clustered = np.repeat(rng.random(500) < 0.1, 10)  # misses come in runs of ten
    c = christoffersen_independence(clustered)
    assert c.lr > 100 and c.p_miss_after_miss > 0.8 and c.p_value < 1e-6
    mild = christoffersen_independence(np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 0] * 3, dtype=bool))
    assert mild.p_value == pytest.approx(stats.chi2.sf(mild.lr, 1))
    assert math.isnan(christoffersen_independence(np.array([True])).lr)
    none = christoffersen_independence(np.zeros(10, dtype=bool))
    assert none.lr == 0.0 and math.isnan(none.p_miss_after_miss)


def test_trailing_volatility_is_ex_ante() -> None:
    r = np.array([np.nan, 1.0, -1.0, 2.0, 0.0, 3.0])
    v = trailing_volatility(r, np.array([2, 3, 5]), window=2)
    assert v.tolist() == pytest.approx([1.0, math.sqrt(2.5), math.sqrt(4.5)])
    # Changing returns after as_of changes nothing.
    r2 = r.copy()
    r2[4:] = 100.0
    assert trailing_volatility(r2, np.array([2, 3]), window=2).tolist() == v[:2].tolist()
    # Fewer than window // 2 finite returns: unknown.
    assert math.isnan(trailing_volatility(r, np.array([0]), window=2)[0])


def test_volatile_mask_takes_the_top_decile() -> None:
    v = np.arange(100, dtype=float)
    v[0] = np.nan
    m = volatile_mask(v, 0.1)
    assert m.sum() == 10 and m[-10:].all() and not m[0]

"""EWMA, GARCH(1,1)-t and static volatility models on real returns: fits, filtering, fallbacks.

No look-ahead: the forecast of return ``i`` is built from returns ``< i`` only, so perturbing
every return after ``t`` leaves every forecast at or before ``t`` bit-for-bit unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from scipy import stats
from structlog.testing import capture_logs

from forecaster.econometric import (
    SIGMA_FLOOR,
    FilterState,
    VarianceModel,
    fit_ewma,
    fit_garch,
    fit_model,
    fit_static,
    standardised_shape,
)
from forecaster.features import log_returns
from tests.forecaster_support import btc_arrays

CTX = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    return log_returns(btc_arrays(3000))  # real hourly returns, with the real hole (NaN)


def test_ewma_is_the_riskmetrics_recursion(returns: np.ndarray) -> None:
    m = fit_ewma(returns[:2000])
    assert (m.kind, m.alpha, m.beta, m.omega, m.mu) == ("ewma", pytest.approx(0.06), 0.94, 0.0, 0.0)
    var, state = m.filter(returns[2000:2010], FilterState(1e-4))
    v = 1e-4
    for i, r in enumerate(returns[2000:2010]):
        assert var[i] == pytest.approx(v, rel=1e-12)
        v = 0.94 * v + 0.06 * r * r
    assert state.var == pytest.approx(v, rel=1e-12) and state.n == 10


def test_ewma_shape_reproduces_the_empirical_standardised_quantiles(returns: np.ndarray) -> None:
    r = returns[:2000][np.isfinite(returns[:2000])]
    m = fit_ewma(r)
    var, _ = m.filter(r)
    z = (r / np.sqrt(var))[20:]
    dist = m.distribution(1.0)
    # The t's 90 % central interval is the symmetrised empirical one of z, its variance z's.
    lo, hi = dist.interval(0.9)
    assert hi[0] == pytest.approx(np.quantile(np.abs(z), 0.9), rel=1e-4)
    assert lo[0] == pytest.approx(-hi[0])
    assert dist.sigma()[0] == pytest.approx(np.sqrt(np.mean(z**2)), rel=1e-4)
    assert 2.1 < m.df < 50  # hourly BTC returns are heavy-tailed, even standardised


def test_standardised_shape_recovers_gaussian_and_t() -> None:
    rng = np.random.default_rng(3)
    df, scale = standardised_shape(rng.standard_normal(200_000) * 2.0)
    sigma = scale if math.isinf(df) else scale * math.sqrt(df / (df - 2))
    assert (df > 30 or math.isinf(df)) and sigma == pytest.approx(2.0, rel=0.01)
    df, scale = standardised_shape(stats.t.rvs(5.0, size=400_000, random_state=rng) * 3.0)
    assert df == pytest.approx(5.0, rel=0.2) and scale == pytest.approx(3.0, rel=0.05)


def test_garch_t_fit_on_1h_returns_is_not_explosive_and_filters(returns: np.ndarray) -> None:
    m = fit_garch(returns[:2000], context=CTX)
    assert m.kind == "garch" and m.fallback is None
    assert m.omega > 0 and 0 < m.alpha < 1 and 0 < m.beta < 1 and m.alpha + m.beta <= 1 + 1e-6
    assert 2 < m.df < 30
    # Unscaled back to log returns: the unconditional sigma is that of hourly BTC returns.
    r = returns[:2000][np.isfinite(returns[:2000])]
    assert math.sqrt(m.init_var) == pytest.approx(np.std(r), rel=0.5)
    dist, state = m.forecast(returns[2000:2500])
    assert np.all(np.isfinite(dist.sigma())) and len(dist) == 500
    assert dist.sigma()[0] == pytest.approx(math.sqrt(m.init_var))  # sigma of a unit-variance t
    # A large move raises the next variance by alpha * e^2.
    s2 = m.step(state, 0.05)
    assert s2.var == pytest.approx(m.omega + m.alpha * (0.05 - m.mu) ** 2 + m.beta * state.var)


def test_garch_fits_tiny_1m_scale_returns() -> None:
    # Returns of order 1e-4 (1m candles): arch fails or warns on these unscaled.
    rng = np.random.default_rng(5)
    n, om, al, be = 4000, 2e-9, 0.1, 0.85
    r, v = np.empty(n), om / (1 - al - be)
    for i in range(n):
        r[i] = math.sqrt(v) * rng.standard_t(5) * math.sqrt(3 / 5)
        v = om + al * r[i] ** 2 + be * v
    m = fit_garch(r)
    assert m.kind == "garch"
    assert m.alpha == pytest.approx(al, abs=0.05) and m.beta == pytest.approx(be, abs=0.08)
    assert m.omega / (1 - m.alpha - m.beta) == pytest.approx(om / (1 - al - be), rel=0.4)


@pytest.mark.parametrize("kind", ["garch", "ewma", "static"])
def test_no_look_ahead(returns: np.ndarray, kind: str) -> None:
    train, test = returns[:2000], returns[2000:2600].copy()
    t = 300
    m = fit_model(kind, train)
    base, _ = m.forecast(test)
    bumped = test.copy()
    bumped[t + 1 :] = bumped[t + 1 :] * 3 + 0.01
    other, _ = m.forecast(bumped)
    # Forecasts of returns 0..t+1 were made from returns <= t: identical.
    np.testing.assert_array_equal(base.scale[: t + 2], other.scale[: t + 2])
    np.testing.assert_array_equal(base.loc[: t + 2], other.loc[: t + 2])
    if kind != "static":
        assert not np.allclose(base.scale[t + 2 :], other.scale[t + 2 :])


def test_filtering_in_steps_equals_filtering_at_once(returns: np.ndarray) -> None:
    m = fit_garch(returns[:2000])
    _, whole = m.filter(returns[2000:2300])
    _, part = m.filter(returns[2000:2150])
    state = FilterState.from_dict(orjson.loads(orjson.dumps(part.to_dict())))
    for r in returns[2150:2300]:
        state = m.step(state, float(r))
    assert state.var == pytest.approx(whole.var, rel=1e-12) and state.n == whole.n


def test_model_round_trips_through_json(returns: np.ndarray) -> None:
    for m in (fit_garch(returns[:2000]), fit_ewma(returns[:2000]), fit_static(np.zeros(50))):
        back = VarianceModel.from_dict(orjson.loads(orjson.dumps(m.to_dict())))
        assert back == m


def test_constant_series_falls_back_to_a_floor_with_a_log_line() -> None:
    flat = np.zeros(500)
    for kind in ("garch", "ewma", "static"):
        with capture_logs() as logs:
            m = fit_model(kind, flat, context=CTX)
        assert m.fallback is not None and m.requested == kind
        assert logs and all(e["log_level"] == "warning" for e in logs)
        assert logs[0]["symbol"] == "BTC/USDT" and logs[0]["timeframe"] == "1h"
        dist, _ = m.forecast(flat)
        assert np.all(np.isfinite(dist.sigma())) and np.all(dist.sigma() >= SIGMA_FLOOR * 0.99)
    with capture_logs() as logs:
        fit_garch(flat, context=CTX)
    assert logs[0]["event"] == "garch_fit_failed"
    assert logs[0]["reason"] == "zero_variance" and logs[0]["fallback"] == "ewma"


def test_zero_range_candles_keep_a_positive_finite_sigma(returns: np.ndarray) -> None:
    # A long run of zero-range candles (no trade): returns of exactly 0 in the filtered span.
    m = fit_ewma(returns[:2000])
    test = returns[2000:3000].copy()
    test[100:900] = 0.0
    dist, state = m.forecast(test)
    assert np.all(np.isfinite(dist.sigma())) and np.all(dist.scale > 0)
    assert state.var >= SIGMA_FLOOR**2
    mostly_flat = np.zeros(600)
    mostly_flat[::50] = 0.001
    dist, _ = fit_static(mostly_flat).forecast(mostly_flat)
    assert np.all(np.isfinite(dist.quantiles()))


def test_garch_that_does_not_converge_falls_back_to_ewma(returns: np.ndarray) -> None:
    with capture_logs() as logs:
        m = fit_garch(returns[:2000], context=CTX, maxiter=2)
    assert m.kind == "ewma" and m.requested == "garch" and m.fallback == "not_converged"
    ev = next(e for e in logs if e["event"] == "garch_fit_failed")
    assert ev["reason"] == "not_converged" and ev["exchange"] == "binance"
    dist, _ = m.forecast(returns[2000:2100])
    assert np.all(np.isfinite(dist.sigma()))


def test_unusable_garch_parameters_are_named() -> None:
    from forecaster.econometric import _garch_problem

    good = {"mu": 0.0, "omega": 1e-6, "alpha[1]": 0.1, "beta[1]": 0.8, "nu": 5.0}
    assert _garch_problem(good) is None
    assert _garch_problem({**good, "omega": math.nan}) == "non_finite_parameters"
    assert _garch_problem({**good, "beta[1]": 0.95}) == "explosive"
    assert _garch_problem({**good, "beta[1]": 0.9}) is None  # integrated: still usable
    assert _garch_problem({**good, "nu": 1.5}) == "infinite_variance"
    assert _garch_problem({"mu": 0.0}) == "missing_parameters"


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown volatility model"):
        fit_model("har", np.zeros(10))

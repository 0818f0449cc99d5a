"""The predictive distribution: closed-form CRPS against a sampled estimate, quantiles, p_up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecaster.distribution import ReturnDistribution, crps_one


def _crps_by_sampling(dist: ReturnDistribution, y: float, n: int = 400_000) -> float:
    # CRPS(F, y) = E|X - y| - E|X - X'| / 2 (Gneiting & Raftery 2007)
    rng = np.random.default_rng(7)
    d = float(dist.df[0])
    z = rng.standard_normal((2, n)) if math.isinf(d) else rng.standard_t(d, (2, n))
    x = dist.loc[0] + dist.scale[0] * z
    return float(np.mean(np.abs(x[0] - y)) - 0.5 * np.mean(np.abs(x[0] - x[1])))


@pytest.mark.parametrize("df", [math.inf, 3.0, 5.0, 30.0])
@pytest.mark.parametrize("y", [-0.02, 0.0, 0.013])
def test_crps_closed_form_matches_sampling(df: float, y: float) -> None:
    dist = ReturnDistribution.of(0.001, 0.01, df)
    assert dist.crps(y)[0] == pytest.approx(_crps_by_sampling(dist, y), rel=0.02)


def test_sigma_quantiles_and_p_up() -> None:
    dist = ReturnDistribution.from_sigma([0.0, 0.002], [0.01, 0.02], [5.0, math.inf])
    np.testing.assert_allclose(dist.sigma(), [0.01, 0.02])
    q = dist.quantiles()
    assert np.all(np.diff(q, axis=1) > 0)  # increasing in the level
    np.testing.assert_allclose(q[:, 2], [0.0, 0.002])  # the median is the location
    assert dist.p_up()[0] == pytest.approx(0.5)
    assert dist.p_up()[1] > 0.5
    lo, hi = dist.interval(0.9)
    np.testing.assert_allclose(lo, q[:, 0])
    np.testing.assert_allclose(hi, q[:, 4])


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="scale"):
        ReturnDistribution.of(0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        ReturnDistribution.of(math.nan, 0.01)
    with pytest.raises(ValueError, match="df"):
        ReturnDistribution.of(0.0, 0.01, 2.0)


@pytest.mark.parametrize("df", [2.5, 4.7, 30.0, math.inf])
def test_scalar_crps_is_the_vectorised_one(df: float) -> None:
    """The live scorer's float CRPS gives the array formula's numbers (Gaussian included)."""
    rng = np.random.default_rng(7)
    loc, scale, r = rng.normal(0, 1e-3, 200), rng.uniform(1e-4, 3e-2, 200), rng.normal(0, 2e-2, 200)
    want = ReturnDistribution.of(loc, scale, df).crps(r)
    got = np.array([crps_one(a, b, df, c) for a, b, c in zip(loc, scale, r, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)

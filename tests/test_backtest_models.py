"""The backtest's distributions per model and the champion rule, on real candles (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.evaluation.models import (
    champion_by_crps,
    fit_baselines,
    gaussian_from_interval,
    holdout_distributions,
    model_distribution,
)
from forecaster.features import target_rows
from tests.forecaster_support import btc_arrays


def test_gaussian_reproduces_the_residual_interval() -> None:
    pred = np.array([0.001, -0.002])
    d = gaussian_from_interval(pred, -0.01, 0.012, 0.9)
    lo, hi = d.interval(0.9)
    np.testing.assert_allclose(lo, pred - 0.01)
    np.testing.assert_allclose(hi, pred + 0.012)
    assert np.isinf(d.df).all()


@dataclass
class _HeadModel:
    """A model object with the ``predict_distribution`` hook (as the probabilistic LSTM will)."""

    q_low: float = -1.0
    q_high: float = 1.0

    def predict_distribution(
        self, arrays: CandleArrays, rows: np.ndarray
    ) -> tuple[ReturnDistribution, np.ndarray]:
        n = rows.size
        return ReturnDistribution.of(np.zeros(n), np.full(n, 0.004), 4.0), np.ones(n, bool)


def test_the_hook_wins_over_the_residual_interval() -> None:
    a = btc_arrays(800)
    rows = target_rows(a, 10, 700)
    d = model_distribution(_HeadModel(), a, rows, np.zeros(rows.size), 0.9)
    assert np.all(d.df == 4.0) and np.all(d.scale == 0.004)
    fb = fit_baselines(a.slice(0, 700), ["naive"], 5, 0.9)["naive"]
    d = model_distribution(fb, a, rows, np.zeros(rows.size), 0.9)
    assert np.isinf(d.df).all() and d.interval(0.9)[1][0] == pytest.approx(fb.q_high)


def test_champion_is_the_lowest_crps_and_ties_go_to_the_order() -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_normal(5000) * 0.01
    n = y.size
    dists = {
        "wide": ReturnDistribution.of(np.zeros(n), np.full(n, 0.03)),
        "right": ReturnDistribution.of(np.zeros(n), np.full(n, 0.01)),
        "same": ReturnDistribution.of(np.zeros(n), np.full(n, 0.01)),
    }
    name, crps = champion_by_crps(y, dists, ["wide", "right", "same"])
    assert name == "right" and crps["right"] < crps["wide"]
    assert champion_by_crps(y, dists, ["same", "right"])[0] == "same"
    assert champion_by_crps(np.empty(0), {}, ["x"]) == (None, {})


def test_holdout_candidates_are_scored_on_the_window_holdout() -> None:
    train = btc_arrays(1200).slice(0, 1000)
    names = ["naive", "ar", "ewma", "garch", "static"]

    def run(arrays: CandleArrays) -> tuple[np.ndarray, dict[str, ReturnDistribution]]:
        return holdout_distributions(
            arrays, names, window=24, holdout_fraction=0.15, ar_lags=5, level=0.9, lstm=None,
            context={},
        )  # fmt: skip

    y, dists = run(train)
    assert set(dists) == set(names) and y.size == 150
    assert all(len(d) == y.size for d in dists.values())
    # The holdout is the window's last 15 % of rows: the outcomes are those closes' returns.
    rows = target_rows(train, 24, 850)
    np.testing.assert_allclose(y, np.log(train.close[rows] / train.close[rows - 1]))
    # The candidates are fitted before the holdout: changing its last candles changes no fit,
    # and no forecast of an earlier holdout row.
    cols = {k: getattr(train, k).copy() for k in ("open", "high", "low", "close", "volume")}
    for k in ("open", "high", "low", "close"):
        cols[k][-20:] *= 1.3
    _, d2 = run(CandleArrays.from_columns(train.timeframe, train.open_time, **cols))
    for n in names:
        np.testing.assert_array_equal(dists[n].scale[:-21], d2[n].scale[:-21], err_msg=n)
        np.testing.assert_array_equal(dists[n].loc[:-21], d2[n].loc[:-21], err_msg=n)

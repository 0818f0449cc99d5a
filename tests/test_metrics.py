"""Metrics against hand-computed values, and the baselines, on real candles where it matters."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from forecaster.baselines import ARBaseline, DriftBaseline, NaiveBaseline, return_history
from forecaster.features import log_returns, prepare, target_rows
from forecaster.metrics import (
    direction_accuracy,
    interval_coverage,
    interval_width,
    mae,
    mape,
    mase,
    naive_scale,
    price_from_return,
    rmse,
    score,
)
from tests.forecaster_support import btc_arrays

ACTUAL = np.array([100.0, 102.0, 101.0, 105.0])
PRED = np.array([101.0, 101.0, 103.0, 105.0])
LAST = np.array([100.0, 100.0, 102.0, 104.0])


def test_point_metrics_by_hand() -> None:
    # errors: -1, 1, -2, 0
    assert mae(ACTUAL, PRED) == pytest.approx(1.0)
    assert rmse(ACTUAL, PRED) == pytest.approx(math.sqrt((1 + 1 + 4 + 0) / 4))
    assert mape(ACTUAL, PRED) == pytest.approx(100 * (1 / 100 + 1 / 102 + 2 / 101 + 0) / 4)
    assert mase(ACTUAL, PRED, scale=2.0) == pytest.approx(0.5)
    assert math.isnan(mase(ACTUAL, PRED, scale=0.0))


def test_direction_accuracy_by_hand() -> None:
    # moves: 0 (left out), +2 (pred +1: right), -1 (pred +1: wrong), +1 (pred +1: right)
    assert direction_accuracy(ACTUAL, PRED, LAST) == pytest.approx(2 / 3)
    # A forecast of "no move" never calls a direction.
    assert direction_accuracy(ACTUAL, LAST, LAST) == 0.0
    assert math.isnan(direction_accuracy(LAST, PRED, LAST))


def test_interval_metrics_by_hand() -> None:
    lower = np.array([99.0, 103.0, 100.0, 104.0])
    upper = np.array([101.0, 104.0, 101.0, 106.0])
    # inside: 100 yes, 102 no, 101 yes (edge), 105 yes
    assert interval_coverage(ACTUAL, lower, upper) == pytest.approx(0.75)
    assert interval_width(lower, upper) == pytest.approx((2 + 1 + 1 + 2) / 4)


def test_score_bundle_and_json() -> None:
    s = score(ACTUAL, PRED, LAST, scale=2.0)
    assert (s.n, s.mae, s.mase, s.coverage) == (4, pytest.approx(1.0), pytest.approx(0.5), None)
    empty = score(np.array([]), np.array([]), np.array([]), scale=1.0).to_json()
    assert empty["mae"] is None and empty["n"] == 0
    orjson.dumps(empty)
    with pytest.raises(ValueError, match="aligned"):
        mae(ACTUAL, PRED[:3])


def test_price_from_return() -> None:
    assert price_from_return(np.array([100.0]), np.array([math.log(1.1)]))[0] == pytest.approx(110)


def test_naive_mase_is_one_in_sample_on_real_data() -> None:
    close = btc_arrays(3000).close[:1900]
    actual, naive = close[1:], close[:-1]
    assert mase(actual, naive, naive_scale(close)) == pytest.approx(1.0, abs=1e-12)
    # The same holds for the training slice's scale used in training (contiguous part).
    data = prepare(btc_arrays(3000).slice(0, 1900), ["ret"], 24, 0.15, 0.15)
    tr = data.train
    assert mase(tr.actual_close, tr.last_close, data.mase_scale) == pytest.approx(1.0)


def test_return_history_never_crosses_the_hole() -> None:
    arrays = btc_arrays(3000)
    rows = target_rows(arrays, 5)
    hist = return_history(arrays, rows, 5)
    assert np.isfinite(hist).all()
    ret = log_returns(arrays)
    assert hist[-1].tolist() == ret[-6:-1].tolist()


def test_baselines_fit_on_train_only() -> None:
    arrays = btc_arrays(3000)
    data = prepare(arrays, ["ret"], 8, 0.15, 0.15)
    tr = data.train
    hist_tr = return_history(arrays, tr.rows, 5)
    drift = DriftBaseline().fit(hist_tr, tr.target_ret)
    assert drift.mean == pytest.approx(tr.target_ret.mean())
    hist_ho = return_history(arrays, data.holdout.rows, 5)
    assert np.all(drift.predict(hist_ho) == drift.mean)
    assert np.all(NaiveBaseline().fit(hist_tr, tr.target_ret).predict(hist_ho) == 0.0)
    ar = ARBaseline(lags=5).fit(hist_tr, tr.target_ret)
    # Same coefficients as an explicit least-squares fit with lag 1 first.
    design = np.column_stack([np.ones(len(tr)), hist_tr[:, ::-1]])
    expect, *_ = np.linalg.lstsq(design, tr.target_ret, rcond=None)
    assert np.allclose(ar.coef, expect)
    design_ho = np.column_stack([np.ones(len(hist_ho)), hist_ho[:, ::-1]])
    assert np.allclose(ar.predict(hist_ho), design_ho @ expect)
    # Refitting with the holdout appended would change them: the fit sees only what it is given.
    hist_all = np.concatenate([hist_tr, hist_ho])
    target_all = np.concatenate([tr.target_ret, data.holdout.target_ret])
    assert not np.allclose(ARBaseline(lags=5).fit(hist_all, target_all).coef, ar.coef)


def test_ar_recovers_a_known_process() -> None:
    rng = np.random.default_rng(0)
    n, phi = 5000, 0.4
    r = np.zeros(n)
    for i in range(1, n):
        r[i] = 0.001 + phi * r[i - 1] + rng.normal(0, 0.01)
    hist = np.lib.stride_tricks.sliding_window_view(r[:-1], 2)
    ar = ARBaseline(lags=2).fit(hist, r[2:])
    assert ar.coef[1] == pytest.approx(phi, abs=0.05)
    assert abs(ar.coef[2]) < 0.05
    with pytest.raises(ValueError, match="needs 2"):
        ar.predict(hist[:, :1])

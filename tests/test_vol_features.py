"""Range-based volatility and time-of-day features, per-window volatility normalisation, heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from forecaster.data import CandleArrays
from forecaster.features import (
    CLIP,
    SIGMA_FLOOR,
    feature_matrix,
    prepare,
    window_input,
)
from forecaster.heads import DF_MIN, SCALE_FLOOR, Forecast, head_params
from tests.forecaster_support import H1, btc_arrays

FEATURES = ["ret", "range", "vol", "gk", "tod_sin", "tod_cos"]
WINDOW = 24


def _prep(arrays: CandleArrays):
    return prepare(arrays, FEATURES, WINDOW, 0.15, 0.15, "trailing_rms")


def test_garman_klass_and_time_of_day_by_hand() -> None:
    a = btc_arrays(500)
    f = feature_matrix(a, FEATURES)
    i = 100
    hl, co = math.log(a.high[i] / a.low[i]), math.log(a.close[i] / a.open[i])
    gk = math.sqrt(0.5 * hl * hl - (2 * math.log(2) - 1) * co * co)
    assert f[i, 3] == pytest.approx(gk)
    hour = (a.open_time[i] % 86_400_000) / 3_600_000
    assert f[i, 4] == pytest.approx(math.sin(2 * math.pi * hour / 24))
    assert f[i, 5] == pytest.approx(math.cos(2 * math.pi * hour / 24))


def _flat(n: int, price: float = 100.0) -> CandleArrays:
    t = np.arange(n, dtype=np.int64) * H1.ms + 1_700_000_000_000 // H1.ms * H1.ms
    p = np.full(n, price)
    return CandleArrays.from_columns(H1, t, p, p, p, p, np.zeros(n))


def test_zero_range_and_constant_series_give_finite_inputs() -> None:
    flat = _flat(400)
    f = feature_matrix(flat, FEATURES)
    assert np.isfinite(f[1:]).all() and (f[1:, 3] == 0).all()
    data = _prep(flat)
    for ws in (data.train, data.early_stop, data.holdout):
        assert np.isfinite(ws.x).all() and np.isfinite(ws.y).all()
        assert (ws.sigma == SIGMA_FLOOR).all()
    x, sigma = window_input(flat.tail(WINDOW + 1), WINDOW, data.scaler, "trailing_rms")
    assert np.isfinite(x).all() and sigma == SIGMA_FLOOR


def test_windows_are_normalised_by_their_own_trailing_volatility() -> None:
    a = btc_arrays(3000)
    data = _prep(a)
    ho = data.holdout
    k = 40
    t = int(ho.rows[k])
    past = np.diff(np.log(a.close[t - WINDOW - 1 : t]))  # the window's returns, not the target's
    assert ho.sigma[k] == pytest.approx(math.sqrt(np.mean(past**2)))
    want_y = np.clip(ho.target_ret[k] / ho.sigma[k], -CLIP, CLIP)
    assert float(ho.y[k]) == pytest.approx(
        (want_y - data.scaler.target_mean) / data.scaler.target_std, rel=1e-5
    )
    # Serving builds the very same input from the window+1 candles before the target.
    x, sigma = window_input(a.slice(t - WINDOW - 1, t), WINDOW, data.scaler, "trailing_rms")
    assert sigma == pytest.approx(ho.sigma[k])
    assert np.allclose(x[0], ho.x[k], atol=1e-5)


def test_normalised_windows_have_no_look_ahead_and_train_only_scaler() -> None:
    a = btc_arrays(3000)
    base = _prep(a)
    _b1, b2 = base.bounds
    cols = {k: getattr(a, k).copy() for k in ("open", "high", "low", "close", "volume")}
    for name in ("open", "high", "low", "close"):
        cols[name][b2:] *= np.exp(np.random.default_rng(3).normal(0, 0.05, len(a) - b2))
    cols["high"][b2:] *= 1.01
    other = _prep(CandleArrays.from_columns(a.timeframe, a.open_time.copy(), **cols))
    assert other.scaler.to_json() == base.scaler.to_json()
    keep = base.holdout.rows < b2 + 1  # the first holdout target reads only rows before b2
    assert np.array_equal(base.holdout.x[keep], other.holdout.x[keep])
    assert np.array_equal(base.early_stop.x, other.early_stop.x)
    assert np.array_equal(base.holdout.sigma[keep], other.holdout.sigma[keep])


def test_head_transforms_and_forecast() -> None:
    raw = np.array([[0.1, -30.0, -30.0], [0.0, 2.0, 1.0]])
    _loc, scale, df = head_params("student_t", raw)
    assert scale[0] == pytest.approx(SCALE_FLOOR, rel=1e-6) and df[0] == pytest.approx(DF_MIN)
    assert scale[1] == pytest.approx(math.log1p(math.e**2) + SCALE_FLOOR)
    _, _, gdf = head_params("gaussian", raw[:, :2])
    assert np.isinf(gdf).all()
    fc = Forecast.of(0.001, 0.01, 4.0, 100.0, 0.9)
    assert fc.upper == pytest.approx(100 * math.exp(0.001 + 0.01 * stats.t.ppf(0.95, 4)))
    assert fc.p_up == pytest.approx(1 - stats.t.cdf(-0.1, 4))
    assert fc.sigma == pytest.approx(0.01 * math.sqrt(2))
    g = Forecast.of(0.0, 0.01, math.inf, 100.0, 0.8)
    assert g.lower == pytest.approx(100 * math.exp(0.01 * stats.norm.ppf(0.1)))
    assert g.p_up == pytest.approx(0.5)
    for bad in ((math.nan, 0.01, 4.0), (0.0, 0.0, 4.0), (0.0, 0.01, 2.0), (0.0, math.inf, 4.0)):
        with pytest.raises(ValueError):
            Forecast.of(*bad, 100.0, 0.9)


def test_student_t_loss_is_the_negative_log_likelihood() -> None:
    import keras

    from forecaster.training.model import nll_loss

    y = np.array([0.3, -1.2, 2.5], dtype=np.float32)
    raw = np.array([[0.1, 0.2, 1.0], [-0.3, -0.5, 0.0], [0.0, 1.0, 3.0]], dtype=np.float32)
    loc, scale, df = head_params("student_t", raw.astype(np.float64))
    want = -np.mean(stats.t.logpdf(y, df, loc, scale))
    got = float(keras.ops.convert_to_numpy(nll_loss("student_t")(y, raw)))
    assert got == pytest.approx(want, rel=1e-4)
    gl, gs, _ = head_params("gaussian", raw[:, :2].astype(np.float64))
    want_g = -np.mean(stats.norm.logpdf(y, gl, gs))
    got_g = float(keras.ops.convert_to_numpy(nll_loss("gaussian")(y, raw[:, :2])))
    assert got_g == pytest.approx(want_g, rel=1e-4)


def test_training_on_a_constant_series_gives_a_servable_finite_version() -> None:
    import orjson

    from forecaster.inference import LoadedModel
    from forecaster.training.train import train
    from tests.forecaster_support import tiny_settings

    flat = _flat(400)
    result = train(flat, tiny_settings(epochs=1, train_candles=400))
    meta = result.meta
    assert orjson.loads(orjson.dumps(meta)) == meta  # JSON, no NaN hiding in it
    ho = meta["holdout"]
    for kind in ("candidate", "garch", "ewma", "static"):
        assert ho[kind]["crps"] is not None and math.isfinite(ho[kind]["crps"])
    assert meta["champion"]["kind"] in ("lstm", "garch", "ewma", "static")
    model = LoadedModel.from_artifact(result.artifact, meta)
    fc = model.predict_next(flat)
    assert all(math.isfinite(v) for v in (fc.lower, fc.upper, fc.sigma, fc.p_up))
    assert fc.lower <= 100.0 <= fc.upper

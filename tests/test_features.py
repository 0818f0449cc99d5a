"""Candle arrays, features, windows, slices and the scaler, on real BTC/USDT 1h candles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from core.schemas import Candle
from core.series import Timeframe
from forecaster.data import CandleArrays, DataError
from forecaster.features import (
    FeatureError,
    Scaler,
    feature_matrix,
    prepare,
    target_rows,
    window_features,
)
from tests.forecaster_support import H1, HOLE_MS, btc_arrays, btc_candles

WINDOW = 24
FEATURES = ["ret", "range", "vol"]


def _prepare(arrays: CandleArrays, window: int = WINDOW):
    return prepare(arrays, FEATURES, window, 0.15, 0.15)


def _perturbed(arrays: CandleArrays, from_row: int) -> CandleArrays:
    """A copy whose candles from ``from_row`` on are distorted (prices and volumes)."""
    rng = np.random.default_rng(7)
    cols = {k: getattr(arrays, k).copy() for k in ("open", "high", "low", "close", "volume")}
    k = len(arrays) - from_row
    factor = np.exp(rng.normal(0, 0.05, k))
    for name in ("open", "high", "low", "close"):
        cols[name][from_row:] *= factor
    cols["high"][from_row:] *= 1.01
    cols["volume"][from_row:] = cols["volume"][from_row:] * 3.0 + 1.0
    return CandleArrays.from_columns(arrays.timeframe, arrays.open_time.copy(), **cols)


def test_forecaster_modules_import_without_tensorflow() -> None:
    # The web and the CLI import these; TensorFlow costs seconds and must load only when used.
    code = (
        "import sys\n"
        "import forecaster.baselines, forecaster.data, forecaster.features, forecaster.inference\n"
        "import forecaster.metrics, forecaster.training.model, forecaster.training.promotion\n"
        "import forecaster.training.train\n"
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'tensorflow imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_arrays_from_candles_and_hole() -> None:
    arrays = btc_arrays(3000)
    assert len(arrays) == 3000
    assert arrays.open_time.dtype == np.int64 and arrays.close.dtype == np.float64
    assert arrays.segments() == [(0, 1981), (1981, 3000)]
    assert arrays.holes() == [(HOLE_MS, HOLE_MS)]
    assert not arrays.is_contiguous()
    assert arrays.slice(0, 1981).is_contiguous()
    assert arrays.close[0] == pytest.approx(16529.67)


def test_arrays_sort_and_last_write_wins() -> None:
    c = list(btc_candles(50))
    corrected = Candle(c[10].open_time, c[10].open, c[10].high, c[10].low, c[10].low, 1.0)
    shuffled = [*c[::-1], corrected]
    arrays = CandleArrays.from_candles(shuffled, H1)
    assert len(arrays) == 50
    assert bool(np.all(np.diff(arrays.open_time) == H1.ms))
    assert arrays.close[10] == c[10].low and arrays.volume[10] == 1.0


def test_misaligned_open_time_is_refused() -> None:
    c = btc_candles(3)[0]
    with pytest.raises(DataError, match="aligned"):
        CandleArrays.from_candles([Candle(c.open_time + 1, 1, 1, 1, 1, 1)], H1)


def test_monthly_segments_use_calendar_months() -> None:
    tf = Timeframe("1M")
    times = [tf.open_time(i) for i in (600, 601, 602, 604)]
    arrays = CandleArrays.from_columns(tf, times, [1] * 4, [1] * 4, [1] * 4, [1] * 4, [1] * 4)
    assert arrays.segments() == [(0, 3), (3, 4)]


def test_feature_values_by_hand() -> None:
    arrays = btc_arrays(3000)
    f = feature_matrix(arrays, FEATURES)
    i = 100
    assert f[i, 0] == pytest.approx(np.log(arrays.close[i] / arrays.close[i - 1]))
    assert f[i, 1] == pytest.approx(np.log(arrays.high[i] / arrays.low[i]))
    assert f[i, 2] == pytest.approx(np.log1p(arrays.volume[i]) - np.log1p(arrays.volume[i - 1]))
    # First row and the first row after the hole have no previous candle.
    assert np.isnan(f[0]).all() and np.isnan(f[1981]).all()
    assert np.isfinite(f[1:1981]).all() and np.isfinite(f[1982:]).all()
    # 2023-03-24 12:00 was halted: volume 0 must not produce -inf.
    assert arrays.volume[1980] == 0.0 and np.isfinite(f[1980]).all()


def test_no_window_crosses_the_hole() -> None:
    arrays = btc_arrays(3000)
    data = _prepare(arrays)
    seg = arrays.segment_ids()
    hole_row = 1981  # first candle after the missing 13:00 one
    for ws in (data.train, data.early_stop, data.holdout):
        assert np.isfinite(ws.x).all()
        first = ws.rows - WINDOW - 1  # earliest candle a window reads
        assert bool(np.all(seg[first] == seg[ws.rows]))
        assert not bool(np.any((first < hole_row) & (ws.rows >= hole_row)))
    # The earliest possible target after the hole needs a whole window after it.
    rows = target_rows(arrays, WINDOW)
    assert rows[rows >= hole_row].min() == hole_row + WINDOW + 1
    with pytest.raises(FeatureError, match="hole"):
        window_features(arrays.slice(hole_row - 5, hole_row + WINDOW - 3), WINDOW, FEATURES)


def test_slices_are_chronological_and_disjoint() -> None:
    data = _prepare(btc_arrays(3000))
    b1, b2 = data.bounds
    assert (b1, b2) == (2100, 2550)
    assert data.train.rows.max() < b1 <= data.early_stop.rows.min()
    assert data.early_stop.rows.max() < b2 <= data.holdout.rows.min()
    assert data.holdout.rows.max() == 2999
    s = data.slices_json()
    assert s["holdout"]["first_target_time"] > s["early_stop"]["last_target_time"]


def test_scaler_is_fit_on_train_only() -> None:
    arrays = btc_arrays(3000)
    base = _prepare(arrays)
    b1, b2 = base.bounds
    for start in (b2, b1):  # holdout, then early-stop + holdout
        other = _prepare(_perturbed(arrays, start))
        assert other.scaler.to_json() == base.scaler.to_json()
    # ...and it does react to the train slice (the test can fail).
    assert _prepare(_perturbed(arrays, 500)).scaler.to_json() != base.scaler.to_json()
    # Train-only statistics.
    train_feats = base.features[:b1]
    ok = ~np.isnan(train_feats).any(axis=1)
    assert np.allclose(base.scaler.mean, train_feats[ok].mean(axis=0))
    assert base.scaler.target_mean == pytest.approx(base.train.target_ret.mean())


def test_no_look_ahead() -> None:
    arrays = btc_arrays(3000)
    base = _prepare(arrays)
    for t in (1500, 2300, 2700):  # in train, early-stop and holdout
        other = _prepare(_perturbed(arrays, t + 1))
        # Unscaled features of every row up to t are unchanged...
        assert np.array_equal(base.features[: t + 1], other.features[: t + 1], equal_nan=True)
        for a, b in (
            (base.train, other.train),
            (base.early_stop, other.early_stop),
            (base.holdout, other.holdout),
        ):
            keep = a.rows <= t
            assert np.array_equal(a.rows, b.rows)
            assert np.array_equal(a.target_ret[keep], b.target_ret[keep])
            assert np.array_equal(a.last_close[keep], b.last_close[keep])
            if t >= base.bounds[0]:
                # ...and, once the scaler's train slice is behind t, so are the scaled windows.
                assert np.array_equal(a.x[keep], b.x[keep])
                assert np.array_equal(a.y[keep], b.y[keep])
        # Something after t did change (the perturbation is real).
        assert not np.array_equal(base.holdout.target_ret, other.holdout.target_ret)


def test_serving_window_matches_training_window() -> None:
    arrays = btc_arrays(3000)
    data = _prepare(arrays)
    for k in (0, 17, len(data.holdout) - 1):
        t = int(data.holdout.rows[k])
        recent = arrays.slice(t - WINDOW - 1, t)  # the window+1 candles before the target
        x = data.scaler.transform(window_features(recent, WINDOW, FEATURES))
        assert np.allclose(x, data.holdout.x[k], atol=1e-6)
        assert recent.close[-1] == data.holdout.last_close[k]


def test_scaler_json_round_trip_and_validation() -> None:
    scaler = _prepare(btc_arrays(3000)).scaler
    raw = orjson.loads(orjson.dumps(scaler.to_json()))
    back = Scaler.from_json(raw)
    assert back.to_json() == scaler.to_json()
    assert all(isinstance(v, float) for v in raw["mean"] + raw["std"])
    with pytest.raises(FeatureError):
        Scaler.from_json({**raw, "std": [0.0, 1.0, 1.0]})
    with pytest.raises(FeatureError):
        Scaler.from_json({**raw, "features": ["ret", "nope", "vol"]})
    with pytest.raises(FeatureError):
        Scaler.from_json({"mean": [0.0]})


def test_too_few_candles() -> None:
    with pytest.raises(FeatureError, match="too few"):
        _prepare(btc_arrays(3000).slice(0, 30))


@pytest.mark.parametrize("tf", ["1m", "1d", "1M"])
def test_a_window_moved_on_by_one_candle_is_the_window_built_afresh(tf: str) -> None:
    """Serving moves each series' window by one candle instead of rebuilding its arrays: the
    same columns, dense index included (monthly candles too); a candle that does not follow
    the last is refused."""
    timeframe = Timeframe(tf)
    t, candles = timeframe.open_time(timeframe.floor_index(1_700_000_000_000)), []
    for i in range(8):
        candles.append(Candle(t, 10.0 + i, 11.0 + i, 9.0, 10.5 + i, 100.0 * (i + 1)))
        t = timeframe.next_open(t)
    moved = CandleArrays.from_candles(candles[:7], timeframe).shifted(candles[7])
    fresh = CandleArrays.from_candles(candles[1:], timeframe)
    for col in ("open_time", "open", "high", "low", "close", "volume", "index"):
        assert np.array_equal(getattr(moved, col), getattr(fresh, col)), col
    with pytest.raises(DataError, match="does not follow"):
        CandleArrays.from_candles(candles[:6], timeframe).shifted(candles[7])

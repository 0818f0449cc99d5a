"""Stationary features, windows, chronological slices and the train-only scaler.

Per candle ``t`` (each needs candle ``t-1`` of the same contiguous run, so the first row of every
segment has no features):

- ``ret``   = log(close_t / close_{t-1})
- ``range`` = log(high_t / low_t)
- ``vol``   = log1p(volume_t) - log1p(volume_{t-1})  (log1p: halted markets print volume 0)

A window for *target row* ``t`` is the feature rows ``t-window .. t-1``; its target is ``ret_t``
and its "last close" is ``close_{t-1}``. A window therefore spans the ``window + 1`` candles
``t-window-1 .. t-1`` plus the target candle, all inside one segment: windows never cross a hole.

Slices are by target row: train ``[0, b1)``, early-stop ``[b1, b2)``, holdout ``[b2, n)``. A
window of a slice reads only rows before its target, so no slice's window sees a later slice's
target; inputs may reach back into an earlier slice (they are the past at prediction time).
The scaler (mean/std per feature, and for the target) is fit on the train slice only.

No TensorFlow here: this module is imported by the web and CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecaster.data import CandleArrays

__all__ = [
    "FEATURE_NAMES",
    "FeatureError",
    "PreparedData",
    "Scaler",
    "WindowSet",
    "build_windows",
    "feature_matrix",
    "log_returns",
    "prepare",
    "slice_bounds",
    "target_rows",
    "window_features",
]

FEATURE_NAMES = ("ret", "range", "vol")


class FeatureError(ValueError):
    """Not enough usable candles, or an unknown feature."""


def _check_features(features: Sequence[str]) -> list[str]:
    names = list(features)
    unknown = [f for f in names if f not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise FeatureError(f"features must be distinct names from {FEATURE_NAMES}, got {names}")
    return names


def _raw_features(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray, names: list[str]
) -> np.ndarray:
    """Features of rows 1..n-1 computed from rows 0..n-1 of one contiguous run."""
    cols: list[np.ndarray] = []
    for name in names:
        if name == "ret":
            cols.append(np.diff(np.log(close)))
        elif name == "range":
            cols.append(np.log(high[1:] / low[1:]))
        else:
            cols.append(np.diff(np.log1p(volume)))
    return np.stack(cols, axis=-1)


def feature_matrix(arrays: CandleArrays, features: Sequence[str]) -> np.ndarray:
    """Unscaled features, ``(len(arrays), len(features))``; NaN on each segment's first row."""
    names = _check_features(features)
    n = len(arrays)
    out = np.full((n, len(names)), np.nan, dtype=np.float64)
    if n > 1:
        body = _raw_features(arrays.close, arrays.high, arrays.low, arrays.volume, names)
        out[1:] = body
        # Differences across a hole compare candles that are not neighbours: blank them.
        out[1:][np.diff(arrays.index) != 1] = np.nan
    return out


def log_returns(arrays: CandleArrays) -> np.ndarray:
    """``log(close_t/close_{t-1})`` per row; NaN on each segment's first row."""
    return feature_matrix(arrays, ["ret"])[:, 0]


def window_features(recent: CandleArrays, window: int, features: Sequence[str]) -> np.ndarray:
    """Unscaled features of the last window, ``(window, F)``, from the last ``window+1`` rows.

    Raises :class:`FeatureError` when there are too few rows or a hole among them.
    """
    names = _check_features(features)
    if len(recent) < window + 1:
        raise FeatureError(f"need {window + 1} candles for a window of {window}, got {len(recent)}")
    last = recent.tail(window + 1)
    if not last.is_contiguous():
        raise FeatureError("the last window crosses a hole in the candles")
    return _raw_features(last.close, last.high, last.low, last.volume, names)


def target_rows(
    arrays: CandleArrays, window: int, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Rows ``t`` in ``[start, stop)`` that have a full window inside t's segment."""
    stop = len(arrays) if stop is None else stop
    out: list[np.ndarray] = []
    for seg_start, seg_stop in arrays.segments():
        lo = max(seg_start + window + 1, start)
        hi = min(seg_stop, stop)
        if hi > lo:
            out.append(np.arange(lo, hi, dtype=np.int64))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def slice_bounds(n: int, early_stop_fraction: float, holdout_fraction: float) -> tuple[int, int]:
    """``(b1, b2)``: train targets are rows ``[0, b1)``, early-stop ``[b1, b2)``, holdout after."""
    n_hold = round(n * holdout_fraction)
    n_early = round(n * early_stop_fraction)
    b2 = n - n_hold
    return b2 - n_early, b2


@dataclass(frozen=True, slots=True)
class Scaler:
    """Per-feature standardisation, and the target's; stored as plain JSON numbers."""

    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    target_mean: float
    target_std: float

    @classmethod
    def fit(cls, features: Sequence[str], x: np.ndarray, y: np.ndarray) -> Scaler:
        """Fit on feature rows ``x`` (``(m, F)``, NaN rows ignored) and targets ``y``."""
        x = x[~np.isnan(x).any(axis=1)]
        y = y[~np.isnan(y)]
        if x.shape[0] < 2 or y.size < 2:
            raise FeatureError("too few training rows to fit the scaler")
        mean = x.mean(axis=0)
        std = _safe_std(x.std(axis=0))
        y_std = float(_safe_std(np.array([y.std()]))[0])
        return cls(tuple(features), mean, std, float(y.mean()), y_std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale features (last axis = features)."""
        return (x - self.mean) / self.std

    def transform_target(self, y: np.ndarray) -> np.ndarray:
        """Scale raw log returns into the model's output space."""
        return (y - self.target_mean) / self.target_std

    def inverse_target(self, z: np.ndarray) -> np.ndarray:
        """Model outputs back to raw log returns."""
        return z * self.target_std + self.target_mean

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (lists of floats), never a pickle."""
        return {
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scaler:
        """Inverse of :meth:`to_json`; validates shapes and finiteness."""
        try:
            feats = tuple(str(f) for f in d["features"])
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            tm, ts = float(d["target_mean"]), float(d["target_std"])
        except (KeyError, TypeError, ValueError) as e:
            raise FeatureError(f"bad scaler parameters: {e}") from None
        _check_features(feats)
        ok = mean.shape == std.shape == (len(feats),) and np.all(np.isfinite(mean))
        if not ok or not np.all(std > 0) or not (np.isfinite(tm) and np.isfinite(ts) and ts > 0):
            raise FeatureError("bad scaler parameters: wrong shape, non-finite or zero std")
        return cls(feats, mean, std, tm, ts)


def _safe_std(s: np.ndarray) -> np.ndarray:
    # A constant feature (e.g. volume on a feed that has none) must not divide by zero.
    return np.where(np.isfinite(s) & (s > 1e-12), s, 1.0)


@dataclass(frozen=True, slots=True)
class WindowSet:
    """Windows of one slice, ready for Keras, with what metrics need in price space."""

    x: np.ndarray  # (m, window, F) float32, scaled
    y: np.ndarray  # (m,) float32, scaled target
    rows: np.ndarray  # (m,) target row in the arrays
    target_ret: np.ndarray  # (m,) raw log return of the target candle
    last_close: np.ndarray  # (m,) close of the candle before the target
    actual_close: np.ndarray  # (m,) close of the target candle
    target_time: np.ndarray  # (m,) open time of the target candle

    def __len__(self) -> int:
        return int(self.rows.size)


def build_windows(
    arrays: CandleArrays, scaled: np.ndarray, rows: np.ndarray, window: int, scaler: Scaler
) -> WindowSet:
    """Windows ending before each target row (rows from :func:`target_rows`)."""
    f = scaled.shape[1]
    if rows.size:
        view = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0)  # (n-w+1, F, w)
        x = np.ascontiguousarray(view[rows - window].transpose(0, 2, 1), dtype=np.float32)
    else:
        x = np.empty((0, window, f), dtype=np.float32)
    close = arrays.close
    ret = np.log(close[rows] / close[rows - 1])
    return WindowSet(
        x=x,
        y=scaler.transform_target(ret).astype(np.float32),
        rows=rows,
        target_ret=ret,
        last_close=close[rows - 1],
        actual_close=close[rows],
        target_time=arrays.open_time[rows],
    )


@dataclass(frozen=True, slots=True)
class PreparedData:
    """Everything one training run needs, derived from the arrays it was given."""

    arrays: CandleArrays
    features: np.ndarray  # (n, F) unscaled
    scaled: np.ndarray  # (n, F) scaled with the train-only scaler
    scaler: Scaler
    bounds: tuple[int, int]
    train: WindowSet
    early_stop: WindowSet
    holdout: WindowSet
    mase_scale: float  # in-sample naive MAE (price) on the train slice's targets

    def slices_json(self) -> dict[str, Any]:
        """Slice boundaries for the model's metadata (target open times and window counts)."""

        def one(ws: WindowSet) -> dict[str, Any]:
            return {
                "windows": len(ws),
                "first_target_time": int(ws.target_time[0]) if len(ws) else None,
                "last_target_time": int(ws.target_time[-1]) if len(ws) else None,
            }

        b1, b2 = self.bounds
        t = self.arrays.open_time
        return {
            "train": {**one(self.train), "rows": [0, b1]},
            "early_stop": {**one(self.early_stop), "rows": [b1, b2], "start_time": int(t[b1])},
            "holdout": {**one(self.holdout), "rows": [b2, len(t)], "start_time": int(t[b2])},
        }


def prepare(
    arrays: CandleArrays,
    features: Sequence[str],
    window: int,
    early_stop_fraction: float,
    holdout_fraction: float,
) -> PreparedData:
    """Split ``arrays`` chronologically, fit the scaler on train, build the three window sets."""
    names = _check_features(features)
    n = len(arrays)
    b1, b2 = slice_bounds(n, early_stop_fraction, holdout_fraction)
    feats = feature_matrix(arrays, names)
    train_rows = target_rows(arrays, window, 0, b1)
    if train_rows.size < 2:
        raise FeatureError(f"too few candles: {n} rows give {train_rows.size} training windows")
    train_ret = np.log(arrays.close[train_rows] / arrays.close[train_rows - 1])
    scaler = Scaler.fit(names, feats[:b1], train_ret)
    scaled = scaler.transform(feats)
    sets = []
    for rows in (train_rows, target_rows(arrays, window, b1, b2), target_rows(arrays, window, b2)):
        ws = build_windows(arrays, scaled, rows, window, scaler)
        if len(ws) == 0:
            raise FeatureError(
                f"too few candles: {n} rows leave an empty slice for window {window}"
            )
        sets.append(ws)
    mase_scale = float(np.mean(np.abs(sets[0].actual_close - sets[0].last_close)))
    train, early_stop, holdout = sets
    return PreparedData(
        arrays, feats, scaled, scaler, (b1, b2), train, early_stop, holdout, mase_scale
    )

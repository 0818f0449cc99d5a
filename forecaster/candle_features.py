"""The features of each candle, from the candle and the one before it.

Per candle ``t`` (each needs candle ``t-1`` of the same contiguous run, so the first row of every
segment has no features):

- ``ret``   = log(close_t / close_{t-1})
- ``range`` = log(high_t / low_t)
- ``vol``   = log1p(volume_t) - log1p(volume_{t-1})  (log1p: halted markets print volume 0)
- ``gk``    = Garman–Klass volatility of candle t, ``sqrt(0.5 ln(h/l)^2 - (2 ln 2 - 1) ln(c/o)^2)``
  (a range-based realised volatility; 0 for a candle with zero range, never -inf or NaN)
- ``tod_sin``, ``tod_cos`` = time of day of candle t's open on the unit circle (intraday
  seasonality; constant, hence scaled to 0, for daily and longer timeframes)

Windows, normalisation, slices and the scaler built on them are in :mod:`forecaster.features`.
No TensorFlow here: this module is imported by the web and CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.data import CandleArrays

__all__ = [
    "FEATURE_NAMES",
    "RETURN_UNITS",
    "FeatureError",
    "Stacked",
    "check_features",
    "feature_matrix",
    "last_window",
    "log_returns",
    "raw_features",
    "window_features",
]

FEATURE_NAMES = ("ret", "range", "vol", "gk", "tod_sin", "tod_cos")
# Columns in units of a log return: these are divided by the window's trailing volatility.
RETURN_UNITS = frozenset({"ret", "range", "gk"})
_GK_C = 2.0 * np.log(2.0) - 1.0
_DAY_MS = 86_400_000


class FeatureError(ValueError):
    """Not enough usable candles, or an unknown feature."""


def check_features(features: Sequence[str]) -> list[str]:
    """``features`` as a list, or :class:`FeatureError` unless they are distinct known names."""
    names = list(features)
    unknown = [f for f in names if f not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise FeatureError(f"features must be distinct names from {FEATURE_NAMES}, got {names}")
    return names


def raw_features(a: CandleArrays | Stacked, names: list[str]) -> np.ndarray:
    """Features of rows 1..n-1 computed from rows 0..n-1 of one contiguous run (along the last
    axis: a :class:`Stacked` of N windows gives ``(N, n-1, F)``, row by row the same numbers)."""
    cols: list[np.ndarray] = []
    for name in names:
        if name == "ret":
            cols.append(np.diff(np.log(a.close)))
        elif name == "range":
            cols.append(np.log(a.high[..., 1:] / a.low[..., 1:]))
        elif name == "vol":
            cols.append(np.diff(np.log1p(a.volume)))
        elif name == "gk":
            hl = np.log(a.high[..., 1:] / a.low[..., 1:])
            co = np.log(a.close[..., 1:] / a.open[..., 1:])
            cols.append(np.sqrt(np.maximum(0.5 * hl * hl - _GK_C * co * co, 0.0)))
        else:
            phase = (a.open_time[..., 1:] % _DAY_MS) * (2.0 * np.pi / _DAY_MS)
            cols.append(np.sin(phase) if name == "tod_sin" else np.cos(phase))
    return np.stack(cols, axis=-1)


@dataclass(frozen=True, slots=True)
class Stacked:
    """The candle columns of N windows of equal length, one row per window."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def feature_matrix(arrays: CandleArrays, features: Sequence[str]) -> np.ndarray:
    """Unscaled features, ``(len(arrays), len(features))``; NaN on each segment's first row."""
    names = check_features(features)
    n = len(arrays)
    out = np.full((n, len(names)), np.nan, dtype=np.float64)
    if n > 1:
        body = raw_features(arrays, names)
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
    names = check_features(features)
    return raw_features(last_window(recent, window), names)


def last_window(recent: CandleArrays, window: int) -> CandleArrays:
    """The last ``window + 1`` candles of ``recent``, which one window reads; raises
    :class:`FeatureError` when there are fewer or a hole among them."""
    if len(recent) < window + 1:
        raise FeatureError(f"need {window + 1} candles for a window of {window}, got {len(recent)}")
    last = recent.tail(window + 1)
    if not last.is_contiguous():
        raise FeatureError("the last window crosses a hole in the candles")
    return last

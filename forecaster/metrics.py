"""Forecast metrics in price space. Plain numpy; reused by training and the walk-forward backtest.

All functions take aligned 1-D arrays. ``last`` is the close the forecast was made from, so a
"move" is ``actual - last`` and a predicted move ``predicted - last``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Scores",
    "direction_accuracy",
    "interval_coverage",
    "interval_width",
    "mae",
    "mape",
    "mase",
    "naive_scale",
    "price_from_return",
    "rmse",
    "score",
]


def price_from_return(last_close: np.ndarray, log_return: np.ndarray) -> np.ndarray:
    """Reconstruct a price from a predicted log return: ``last_close * exp(r)``."""
    return np.asarray(last_close, dtype=np.float64) * np.exp(np.asarray(log_return, np.float64))


def _pair(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if a.shape != p.shape or a.ndim != 1:
        raise ValueError(f"metric inputs must be 1-D and aligned, got {a.shape} and {p.shape}")
    return a, p


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error; NaN for no points."""
    a, p = _pair(actual, predicted)
    return float(np.mean(np.abs(a - p))) if a.size else math.nan


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared error; NaN for no points."""
    a, p = _pair(actual, predicted)
    return float(np.sqrt(np.mean((a - p) ** 2))) if a.size else math.nan


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error, in percent (prices are positive, so no zero division)."""
    a, p = _pair(actual, predicted)
    return float(100.0 * np.mean(np.abs((a - p) / a))) if a.size else math.nan


def naive_scale(close: np.ndarray) -> float:
    """In-sample MAE of the naive forecast (next = last) over consecutive closes."""
    c = np.asarray(close, dtype=np.float64)
    return float(np.mean(np.abs(np.diff(c)))) if c.size > 1 else math.nan


def mase(actual: np.ndarray, predicted: np.ndarray, scale: float) -> float:
    """MAE divided by ``scale``, the naive forecast's in-sample MAE on the training slice.

    NaN when the scale is zero or missing (a flat training slice has no meaningful MASE).
    """
    if not (math.isfinite(scale) and scale > 0):
        return math.nan
    return mae(actual, predicted) / scale


def direction_accuracy(actual: np.ndarray, predicted: np.ndarray, last: np.ndarray) -> float:
    """Share of candles that moved whose direction the forecast got right.

    Candles with no move are left out (nothing to call). A forecast of no move (the naive one)
    is counted as a miss on a candle that moved: it did not call the direction.
    """
    a, p = _pair(actual, predicted)
    lst = np.asarray(last, dtype=np.float64)
    moved = a != lst
    if not moved.any():
        return math.nan
    return float(np.mean(np.sign(a[moved] - lst[moved]) == np.sign(p[moved] - lst[moved])))


def interval_coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actual values inside ``[lower, upper]``."""
    a = np.asarray(actual, dtype=np.float64)
    if not a.size:
        return math.nan
    return float(np.mean((a >= lower) & (a <= upper)))


def interval_width(lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean width of the interval, in price."""
    lo = np.asarray(lower, dtype=np.float64)
    return float(np.mean(np.asarray(upper, dtype=np.float64) - lo)) if lo.size else math.nan


@dataclass(frozen=True, slots=True)
class Scores:
    """Metrics of one forecaster on one set of points (price space)."""

    n: int
    mae: float
    rmse: float
    mape: float
    mase: float
    direction: float
    coverage: float | None = None
    width: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes ``None`` (JSON has no NaN)."""
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def score(
    actual: np.ndarray,
    predicted: np.ndarray,
    last: np.ndarray,
    *,
    scale: float,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> Scores:
    """All metrics at once; interval figures only when ``lower`` and ``upper`` are given."""
    a, p = _pair(actual, predicted)
    cov = width = None
    if lower is not None and upper is not None:
        cov = interval_coverage(a, lower, upper)
        width = interval_width(lower, upper)
    return Scores(
        n=int(a.size),
        mae=mae(a, p),
        rmse=rmse(a, p),
        mape=mape(a, p),
        mase=mase(a, p, scale),
        direction=direction_accuracy(a, p, last),
        coverage=cov,
        width=width,
    )

"""Forecast metrics. Plain numpy/scipy; reused by training, the backtest and the live score.

Point metrics (MAE, RMSE, MAPE, MASE, direction, interval coverage/width) are in *price space*:
they take aligned 1-D arrays, ``last`` is the close the forecast was made from, so a "move" is
``actual - last`` and a predicted move ``predicted - last``.

Distribution scores (CRPS, pinball, Winkler, QLIKE, Brier, Christoffersen) are in *log-return
space*: forecasts are :class:`~forecaster.distribution.ReturnDistribution` of the next log return
``r = log(actual / last)`` and outcomes are those returns. Quantiles and intervals map to prices
monotonically, so coverage and the Christoffersen test are the same in either space; CRPS,
pinball and Winkler are in units of log return (about a fraction of the price: multiply by the
price for an approximate price figure). Lower is better for every score except coverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from forecaster.distribution import PUBLISHED_QUANTILES, ReturnDistribution

__all__ = [
    "Christoffersen",
    "Scores",
    "brier_score",
    "christoffersen_independence",
    "crps",
    "direction_accuracy",
    "interval_coverage",
    "interval_width",
    "mae",
    "mape",
    "mase",
    "naive_scale",
    "pinball_loss",
    "price_from_return",
    "qlike",
    "rmse",
    "score",
    "trailing_volatility",
    "volatile_mask",
    "winkler_score",
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

    MASE in Hyndman & Koehler's sense (2006). Not the live score's ``relative_mae``, which
    divides by the naive MAE on the same targets (:mod:`storage.scores`). NaN when the scale is
    zero or missing (a flat training slice has no meaningful MASE).
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


# Distribution scores (log-return space) ---------------------------------------------------


def _ret(r: np.ndarray | Sequence[float]) -> np.ndarray:
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"outcomes must be 1-D, got shape {a.shape}")
    return a


def crps(dist: ReturnDistribution, r: np.ndarray) -> float:
    """Mean continuous ranked probability score of the outcomes ``r`` (closed form)."""
    y = _ret(r)
    return float(np.mean(dist.crps(y))) if y.size else math.nan


def pinball_loss(
    quantiles: np.ndarray, r: np.ndarray, levels: Sequence[float] = PUBLISHED_QUANTILES
) -> float:
    """Mean pinball (quantile) loss over points and ``levels``; ``quantiles`` is ``(n, k)``.

    For level ``q`` and forecast ``f``: ``q (y - f)`` when ``y >= f``, ``(1 - q)(f - y)`` else.
    """
    y = _ret(r)
    qs = np.asarray(quantiles, dtype=np.float64).reshape(y.size, len(levels))
    if not y.size:
        return math.nan
    lv = np.asarray(levels, dtype=np.float64)[None, :]
    d = y[:, None] - qs
    return float(np.mean(np.maximum(lv * d, (lv - 1.0) * d)))


def winkler_score(lower: np.ndarray, upper: np.ndarray, r: np.ndarray, level: float) -> float:
    """Mean Winkler (interval) score of central intervals at ``level``.

    Width, plus ``2/alpha`` times the distance by which the outcome falls outside
    (``alpha = 1 - level``): a proper score for the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    """
    y, lo, hi = _ret(r), np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    if not y.size:
        return math.nan
    a = 1.0 - level
    pen = (2.0 / a) * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))
    return float(np.mean(hi - lo + pen))


def qlike(variance: np.ndarray, r: np.ndarray) -> float:
    """Mean QLIKE loss of a forecast of ``E[r^2]``, with ``r^2`` as the proxy: ``log h + r^2/h``.

    This is Patton's (2011) QLIKE less ``log r^2 + 1``, a term that is the same for every model
    (so differences and rankings are Patton's), and finite when a return is exactly 0.
    """
    y, h = _ret(r), np.asarray(variance, dtype=np.float64)
    if not y.size:
        return math.nan
    if np.any(h <= 0):
        raise ValueError("variance forecasts must be positive")
    return float(np.mean(np.log(h) + y**2 / h))


def brier_score(p_up: np.ndarray, r: np.ndarray) -> float:
    """Mean squared error of the probability that the next close is above the last.

    The outcome is 1 when ``r > 0``, else 0 (an unchanged close is not "up"). Always saying
    0.5 scores 0.25.
    """
    y, p = _ret(r), np.asarray(p_up, dtype=np.float64)
    return float(np.mean((p - (y > 0)) ** 2)) if y.size else math.nan


@dataclass(frozen=True, slots=True)
class Christoffersen:
    """Christoffersen's (1998) test that interval misses are independent (first-order Markov).

    ``lr`` is chi-square(1) under independence (5 % critical value 3.84); ``p_miss_after_miss``
    and ``p_miss_after_hit`` are the estimated transition probabilities.
    """

    lr: float
    p_value: float
    p_miss_after_miss: float
    p_miss_after_hit: float
    n: int


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def christoffersen_independence(miss: np.ndarray) -> Christoffersen:
    """The independence LR of a miss sequence in time order (``True`` = outside the interval).

    ``LR = -2 [log L(pi) - log L(pi01, pi11)]`` over the transitions between consecutive points.
    """
    m = np.asarray(miss, dtype=bool)
    prev, cur = m[:-1], m[1:]
    n00 = int(np.sum(~prev & ~cur))
    n01 = int(np.sum(~prev & cur))
    n10 = int(np.sum(prev & ~cur))
    n11 = int(np.sum(prev & cur))
    total = n00 + n01 + n10 + n11
    if total == 0:
        return Christoffersen(math.nan, math.nan, math.nan, math.nan, int(m.size))
    p01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    p11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    p = (n01 + n11) / total
    ll0 = _xlogy(n00 + n10, 1 - p) + _xlogy(n01 + n11, p)
    ll1 = _xlogy(n00, 1 - p01) + _xlogy(n01, p01) + _xlogy(n10, 1 - p11) + _xlogy(n11, p11)
    lr = max(-2.0 * (ll0 - ll1), 0.0)
    p11_out = p11 if n10 + n11 else math.nan
    return Christoffersen(lr, float(stats.chi2.sf(lr, 1)), p11_out, p01, int(m.size))


def trailing_volatility(returns: np.ndarray, as_of: np.ndarray, window: int = 24) -> np.ndarray:
    """Ex-ante realised volatility at each ``as_of`` row: RMS of returns ``as_of-window+1..as_of``.

    ``returns`` is the per-row log return (NaN on a segment's first row: skipped); rows with
    fewer than ``window // 2`` finite returns in the window get NaN. Nothing after ``as_of``
    is read.
    """
    r = np.asarray(returns, dtype=np.float64)
    rows = np.asarray(as_of, dtype=np.int64)
    idx = rows[:, None] + np.arange(-window + 1, 1)[None, :]
    ok = idx >= 0
    vals = np.where(ok, r[np.clip(idx, 0, None)], np.nan)
    fin = np.isfinite(vals)
    count = fin.sum(axis=1)
    ss = np.where(fin, vals, 0.0) ** 2
    rms = np.sqrt(ss.sum(axis=1) / np.maximum(count, 1))
    return np.where(count >= max(window // 2, 1), rms, np.nan)


def volatile_mask(vol: np.ndarray, top: float = 0.1) -> np.ndarray:
    """Points whose (ex-ante) volatility is in the top ``top`` share (NaN never counts)."""
    v = np.asarray(vol, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros(v.size, dtype=bool)
    cut = float(np.quantile(v[ok], 1.0 - top))
    return ok & (v >= cut)

"""What a model's raw outputs mean, and the published forecast built from a distribution.

The network's ``Dense(k)`` head (:mod:`forecaster.training.model`) outputs, in the scaled target
space:

- ``mse``: ``[loc]``; its scale is a constant measured on the early-stop residuals at training
- ``gaussian``: ``[loc, s]`` with ``scale = softplus(s) + SCALE_FLOOR``
- ``student_t``: ``[loc, s, d]`` with, in addition, ``df = softplus(d) + DF_MIN``

Back in log-return units the location and scale are multiplied by the target scaler's std and
the window's trailing volatility (``features.window_sigma``). No TensorFlow here: the loss in
:mod:`forecaster.training.model` applies the same transforms, and serving applies them in numpy.

:class:`Forecast` is the one next-candle forecast every model kind (lstm, garch, ewma, static)
publishes: built from ``loc``, ``scale``, ``df`` of the next log return with scipy's ufuncs
(``stdtrit``, ``ndtri``: microseconds, unlike ``scipy.stats``' per-call overhead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from forecaster.distribution import PUBLISHED_QUANTILES

__all__ = [
    "DF_MIN",
    "HEADS",
    "SCALE_FLOOR",
    "Forecast",
    "head_outputs",
    "head_params",
    "softplus",
]

HEADS = ("student_t", "gaussian", "mse")
SCALE_FLOOR = 1e-3  # in scaled target units (a scale of 0 would make the likelihood infinite)
DF_MIN = 2.5  # df > 2: the t keeps a finite variance, hence a sigma to publish


def head_outputs(head: str) -> int:
    """How many raw outputs the head's Dense layer has."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return {"mse": 1, "gaussian": 2, "student_t": 3}[head]


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow."""
    return np.logaddexp(0.0, x)


def head_params(
    head: str, raw: np.ndarray, mse_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs ``(B, k)`` → ``loc``, ``scale``, ``df`` in the scaled target space."""
    raw = np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], -1)
    loc = raw[:, 0]
    if head == "mse":
        return loc, np.full_like(loc, mse_scale), np.full_like(loc, math.inf)
    scale = softplus(raw[:, 1]) + SCALE_FLOOR
    if head == "gaussian":
        return loc, scale, np.full_like(loc, math.inf)
    return loc, scale, softplus(raw[:, 2]) + DF_MIN


def _usable(loc: float, scale: float, df: float, last_close: float, level: float) -> bool:
    """Whether :meth:`Forecast.of` accepts these parameters before computing anything."""
    ok = math.isfinite(loc) and math.isfinite(scale) and scale > 0 and df > 2
    return ok and math.isfinite(last_close) and last_close > 0 and 0 < level < 1


def _ppf(p: np.ndarray, df: float) -> np.ndarray:
    return special.ndtri(p) if math.isinf(df) else special.stdtrit(df, p)


@dataclass(frozen=True, slots=True)
class Forecast:
    """One next-candle forecast: the point, the interval at ``level`` and the distribution.

    Prices are ``last_close * exp(r)`` of the return's quantiles (a monotone map), so
    ``quantiles`` are quantiles of the next close at :data:`PUBLISHED_QUANTILES`.
    """

    pred_return: float  # the point: the distribution's median log return
    pred_close: float
    lower: float
    upper: float
    level: float
    sigma: float  # standard deviation of the next log return
    p_up: float  # P(next close > last close)
    quantiles: tuple[float, ...]  # next close at PUBLISHED_QUANTILES
    loc: float
    scale: float
    df: float

    @classmethod
    def of(cls, loc: float, scale: float, df: float, last_close: float, level: float) -> Forecast:
        """Build from the next log return's location, scale and df (``inf``: Gaussian).

        Raises ``ValueError`` on parameters that would put a non-finite number in a message.
        """
        if not _usable(loc, scale, df, last_close, level):
            raise ValueError(f"unusable forecast parameters loc={loc} scale={scale} df={df}")
        a = (1.0 - level) / 2.0
        probs = np.array([*PUBLISHED_QUANTILES, a, 1.0 - a])
        r = loc + scale * _ppf(probs, df)
        closes = last_close * np.exp(r)
        if math.isinf(df):
            sigma, p_down = scale, float(special.ndtr(-loc / scale))
        else:
            sigma = scale * math.sqrt(df / (df - 2.0))
            p_down = float(special.stdtr(df, -loc / scale))
        if not (np.all(np.isfinite(closes)) and math.isfinite(sigma)):
            raise ValueError(f"non-finite forecast from loc={loc} scale={scale} df={df}")
        return cls._build(loc, scale, df, last_close, level, closes.tolist(), sigma, p_down)

    @classmethod
    def many(
        cls,
        loc: np.ndarray,
        scale: np.ndarray,
        df: np.ndarray,
        last_close: np.ndarray,
        level: np.ndarray,
    ) -> list[Forecast | ValueError]:
        """:meth:`of` for ``N`` forecasts at once (a batch of series served by one model): the
        same numbers from one scipy call per quantity instead of ``N``; a row whose parameters
        :meth:`of` would refuse gets its ``ValueError`` in its place."""
        loc, scale, df, last, lv = (
            np.asarray(v, dtype=np.float64) for v in (loc, scale, df, last_close, level)
        )
        ok = np.isfinite(loc) & np.isfinite(scale) & (scale > 0) & (df > 2)
        ok &= np.isfinite(last) & (last > 0) & (lv > 0) & (lv < 1)
        a = (1.0 - lv) / 2.0
        n_q = len(PUBLISHED_QUANTILES)
        probs = np.empty((loc.size, n_q + 2))
        probs[:, :n_q] = PUBLISHED_QUANTILES
        probs[:, n_q], probs[:, n_q + 1] = a, 1.0 - a
        gauss = np.isinf(df)
        d = np.where(gauss | ~ok, 3.0, df)[:, None]  # any valid stand-in; masked below
        with np.errstate(all="ignore"):
            z = np.where(gauss[:, None], special.ndtri(probs), special.stdtrit(d, probs))
            r = loc[:, None] + scale[:, None] * z
            closes = last[:, None] * np.exp(r)
            ratio = -loc / scale
            p_down = np.where(gauss, special.ndtr(ratio), special.stdtr(d[:, 0], ratio))
        finite = np.isfinite(closes).all(axis=1)
        rows = zip(
            loc.tolist(),
            scale.tolist(),
            df.tolist(),
            last.tolist(),
            lv.tolist(),
            closes.tolist(),
            p_down.tolist(),
            (ok & finite).tolist(),
            strict=True,
        )
        out: list[Forecast | ValueError] = []
        for li, si, di, lc, lvi, ci, pd, good in rows:
            if not good:
                usable = _usable(li, si, di, lc, lvi)
                why = "non-finite forecast from" if usable else "unusable forecast parameters"
                out.append(ValueError(f"{why} loc={li} scale={si} df={di}"))
                continue
            sigma = si if math.isinf(di) else si * math.sqrt(di / (di - 2.0))
            if not math.isfinite(sigma):
                out.append(ValueError(f"non-finite forecast from loc={li} scale={si} df={di}"))
                continue
            out.append(cls._build(li, si, di, lc, lvi, ci, sigma, pd))
        return out

    @classmethod
    def _build(
        cls,
        loc: float,
        scale: float,
        df: float,
        last_close: float,
        level: float,
        closes: Sequence[float],
        sigma: float,
        p_down: float,
    ) -> Forecast:
        n = len(PUBLISHED_QUANTILES)
        return cls(
            pred_return=float(loc),
            pred_close=float(last_close * math.exp(loc)),
            lower=float(closes[n]),
            upper=float(closes[n + 1]),
            level=float(level),
            sigma=float(sigma),
            p_up=float(min(max(1.0 - p_down, 0.0), 1.0)),
            quantiles=tuple(float(c) for c in closes[:n]),
            loc=float(loc),
            scale=float(scale),
            df=float(df),
        )

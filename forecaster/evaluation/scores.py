"""Distribution scores of every backtest model, in log-return space, on the same points.

For a model with a predictive distribution (all but ``seed``): CRPS, mean pinball loss over the
published quantiles, Winkler score at 80 % and at the interval level (90 %), coverage overall
and in the top decile of *ex-ante* volatility (trailing 24-candle realised volatility at
``as_of``), Christoffersen's independence LR of the misses, QLIKE of the forecast of ``r^2``
(variance plus squared location) and the Brier score of ``p_up``. The interval at the interval
level is the model's published one (``lower``/``upper`` of the run: for ``published``, the
ACI-calibrated one); at 80 % it is the distribution's central interval. See
:mod:`forecaster.metrics` for the definitions; ``r = log(actual / last_close)``.

Relative figures: ``winkler_vs_static`` is ``W / W(static) - 1`` and ``crps_vs_garch``
``CRPS / CRPS(garch) - 1`` (negative = better), when those models ran.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster import metrics
from forecaster.distribution import PUBLISHED_QUANTILES
from forecaster.features import log_returns

if TYPE_CHECKING:
    from forecaster.evaluation.backtest import BacktestResult

__all__ = ["VOL_WINDOW", "distribution_scores", "outcomes", "volatility_at_as_of"]

VOL_WINDOW = 24  # candles of trailing realised volatility that define the volatile decile
VOLATILE_TOP = 0.1
LOWER_LEVEL = 0.8


def outcomes(result: BacktestResult) -> np.ndarray:
    """The observed next log return at every point."""
    return np.log(result.actual / result.last_close)


def volatility_at_as_of(result: BacktestResult) -> np.ndarray:
    """Trailing realised volatility known at each point's ``as_of`` (no later candle read)."""
    ret = log_returns(result.arrays)
    return metrics.trailing_volatility(ret, result.rows - 1, VOL_WINDOW)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def distribution_scores(result: BacktestResult) -> dict[str, dict[str, Any]]:
    """Per model with a distribution: the scores above (JSON-ready; NaN becomes ``None``)."""
    y = outcomes(result)
    last = result.last_close
    level = result.settings.interval_level
    volatile = metrics.volatile_mask(volatility_at_as_of(result), VOLATILE_TOP)
    out: dict[str, dict[str, Any]] = {}
    for name, run in result.models.items():
        dist = run.distribution()
        if dist is None or run.lower is None or run.upper is None:
            continue
        lo, hi = np.log(run.lower / last), np.log(run.upper / last)
        miss = (y < lo) | (y > hi)
        lo8, hi8 = dist.interval(LOWER_LEVEL)
        ch = metrics.christoffersen_independence(miss)
        second_moment = dist.variance() + dist.loc**2
        s: dict[str, Any] = {
            "crps": _num(metrics.crps(dist, y)),
            "pinball": _num(metrics.pinball_loss(dist.quantiles(PUBLISHED_QUANTILES), y)),
            "winkler_80": _num(metrics.winkler_score(lo8, hi8, y, LOWER_LEVEL)),
            "winkler_90": _num(metrics.winkler_score(lo, hi, y, level)),
            "coverage_80": _num(float(np.mean((y >= lo8) & (y <= hi8)))) if y.size else None,
            "coverage_volatile": _num(float(np.mean(~miss[volatile]))) if volatile.any() else None,
            "volatile_points": int(volatile.sum()),
            "christoffersen_lr": _num(ch.lr),
            "christoffersen_p": _num(ch.p_value),
            "p_miss_after_miss": _num(ch.p_miss_after_miss),
            "qlike": _num(metrics.qlike(second_moment, y)),
            "brier": _num(metrics.brier_score(dist.p_up(), y)),
            "sigma_mean": _num(float(np.mean(dist.sigma()))),
            "level_mean": _num(float(np.mean(run.level))) if run.level is not None else None,
        }
        if run.champion is not None:
            s["champions"] = dict(Counter(run.champion))
            s["level_last"] = _num(float(run.level[-1])) if run.level is not None else None
        out[name] = s
    for s in out.values():
        s["winkler_vs_static"] = _rel(s["winkler_90"], out.get("static", {}).get("winkler_90"))
        s["crps_vs_garch"] = _rel(s["crps"], out.get("garch", {}).get("crps"))
    return out


def _rel(v: float | None, ref: float | None) -> float | None:
    if v is None or ref is None or ref == 0:
        return None
    return v / ref - 1.0

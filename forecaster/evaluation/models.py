"""Predictive distributions for the walk-forward backtest, and the champion rule on the holdout.

Every model yields a :class:`~forecaster.distribution.ReturnDistribution` of the next log return
on the same points:

- ``ewma``, ``garch``, ``static``: :mod:`forecaster.econometric`, fitted on the fold's train
  window and filtered forward with fixed parameters from the window's first candle.
- ``naive``, ``drift``, ``ar`` and today's point-only ``lstm``: the Gaussian whose central
  interval at the interval level is the model's residual-quantile interval (train-window
  residuals for the baselines, holdout residuals for the LSTM, as training calibrates it), so
  their published intervals are exactly today's. When a model object has the hook
  ``predict_distribution(arrays, rows) -> (ReturnDistribution, ok)`` (the probabilistic LSTM
  head) the backtest uses its own distribution instead.

The champion (what the service would publish) is the model with the lowest CRPS on the fold's
holdout: the last ``holdout_fraction`` of the train window's target rows, as training splits
it. The econometric models and baselines are refitted on the candles before the holdout for
that comparison; the LSTM is the fold's serving model on the same rows (its weights never saw
them when it was trained on this window; its interval was calibrated on them, as in training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from config.settings import ModelSettings
from core.model_meta import ModelMeta
from forecaster.baselines import (
    ARBaseline,
    Baseline,
    DriftBaseline,
    FittedBaseline,
    NaiveBaseline,
    return_history,
)
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.econometric import SIGMA_FLOOR, VarianceModel, fit_model
from forecaster.features import FeatureError, log_returns, slice_bounds, target_rows

if TYPE_CHECKING:
    from forecaster.inference import LoadedModel

__all__ = [
    "DISTRIBUTION_HOOK",
    "VOL_MODELS",
    "FittedBaseline",
    "champion_by_crps",
    "fit_baselines",
    "fit_vol_models",
    "gaussian_from_interval",
    "holdout_distributions",
    "holdout_split",
    "in_sample_naive_mae",
    "lstm_fold",
    "model_distribution",
    "series_context",
    "vol_distributions",
]

VOL_MODELS = ("ewma", "garch", "static")
# The method a model object may offer to give its own predictive distribution (see above).
DISTRIBUTION_HOOK = "predict_distribution"


def in_sample_naive_mae(train: CandleArrays) -> float:
    """MASE denominator: the naive forecast's MAE on consecutive candles of ``train``."""
    rows = target_rows(train, 0)
    if rows.size == 0:
        return math.nan
    return float(np.mean(np.abs(train.close[rows] - train.close[rows - 1])))


def fit_baselines(
    train: CandleArrays, names: Sequence[str], lags: int, level: float
) -> dict[str, FittedBaseline]:
    """Fit the return baselines on ``train`` only; intervals from in-sample residual quantiles."""
    rows = target_rows(train, lags)
    if rows.size < lags + 2:
        raise FeatureError(f"too few candles to fit the baselines: {rows.size} targets")
    hist = return_history(train, rows, lags)
    y = np.log(train.close[rows] / train.close[rows - 1])
    makers: dict[str, Callable[[], Baseline]] = {
        "naive": NaiveBaseline,
        "drift": DriftBaseline,
        "ar": lambda: ARBaseline(lags=lags),
    }
    out: dict[str, FittedBaseline] = {}
    for name in names:
        model = makers[name]().fit(hist, y)
        resid = y - model.predict(hist)
        q_lo, q_hi = np.quantile(resid, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        out[name] = FittedBaseline(model, float(q_lo), float(q_hi))
    return out


def series_context(series: str, arrays: CandleArrays) -> dict[str, str]:
    """The series fields every log line carries (a CSV name has no exchange or symbol)."""
    parts = series.split(":")
    if len(parts) == 3:
        return {"exchange": parts[0], "symbol": parts[1], "timeframe": parts[2]}
    return {"series": series, "timeframe": arrays.timeframe.text}


def lstm_fold(
    train: CandleArrays,
    settings: ModelSettings,
    max_model_age: int,
    serving: LoadedModel | None,
    serving_meta: ModelMeta | None,
) -> tuple[LoadedModel, ModelMeta, dict[str, Any]]:
    """One scheduled retrain, as ``forecaster.training.job.train_series`` does it."""
    from forecaster.training.promotion import decide_promotion  # noqa: PLC0415 (pulls in TensorFlow; loaded only when the LSTM runs)
    from forecaster.training.train import train as train_model  # noqa: PLC0415 (pulls in TensorFlow; loaded only when the LSTM runs)

    t0 = time.perf_counter()
    result = train_model(train, settings, current=serving, warm_start=True)
    seconds = time.perf_counter() - t0
    meta = result.typed_meta
    expired = serving_meta is not None and serving_meta.expired(
        int(train.open_time[-1]), train.timeframe, max_model_age
    )
    decision = decide_promotion(meta, serving_meta, expired)
    info = {
        "train_seconds": round(seconds, 3),
        "epochs_run": meta.epochs_run,
        "best_epoch": meta.best_epoch,
        "warm_started": meta.warm_started,
        "holdout_skill": meta.skill,
        "promoted": decision.promote,
        "reason": decision.reason,
        "train_first_time": meta.training_range.first_open_time,
        "train_last_time": meta.training_range.last_open_time,
    }
    if decision.promote or serving is None:
        # serving is None only when the very first model had no valid score: serve it anyway,
        # the backtest must predict something (the live service would publish nothing).
        return result.model, meta, info
    assert serving_meta is not None
    return serving, serving_meta, info


def gaussian_from_interval(
    pred_return: np.ndarray, q_low: float, q_high: float, level: float
) -> ReturnDistribution:
    """The Gaussian whose central ``level`` interval is ``[pred + q_low, pred + q_high]``."""
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    sigma = max((q_high - q_low) / (2.0 * z), SIGMA_FLOOR)
    loc = np.asarray(pred_return, dtype=np.float64) + (q_low + q_high) / 2.0
    return ReturnDistribution.from_sigma(loc, np.full(loc.shape, sigma))


def model_distribution(
    model: Any, arrays: CandleArrays, rows: np.ndarray, pred_return: np.ndarray, level: float
) -> ReturnDistribution:
    """A point model's distribution at ``rows``: its own (hook) or the residual-interval Gaussian.

    ``model`` is a ``LoadedModel`` (attributes ``q_low``/``q_high``) or a :class:`FittedBaseline`.
    """
    net = getattr(model, "model", model)  # a FittedBaseline wraps the fitted baseline
    hook = getattr(model, DISTRIBUTION_HOOK, None) or getattr(net, DISTRIBUTION_HOOK, None)
    if callable(hook):
        dist, ok = hook(arrays, rows)
        if not np.all(ok):
            raise ValueError("the model has no distribution for a test point")
        return dist
    return gaussian_from_interval(pred_return, float(model.q_low), float(model.q_high), level)


def fit_vol_models(
    names: Sequence[str], returns: np.ndarray, context: Mapping[str, Any]
) -> dict[str, VarianceModel]:
    """Fit each of ``names`` (among :data:`VOL_MODELS`) on train-window log returns."""
    return {n: fit_model(n, returns, context=context) for n in names}


def vol_distributions(
    models: Mapping[str, VarianceModel], arrays: CandleArrays, start: int, rows: np.ndarray
) -> dict[str, ReturnDistribution]:
    """Forecasts at target ``rows`` filtered from row ``start`` (fixed parameters).

    The forecast of row ``t`` reads returns of rows ``start .. t-1`` only.
    """
    if rows.size == 0:
        return {}
    ret = log_returns(arrays.slice(0, int(rows.max()) + 1))[start:]
    out: dict[str, ReturnDistribution] = {}
    for name, m in models.items():
        var, _ = m.filter(ret)
        out[name] = m.distribution(var[rows - start])
    return out


def holdout_split(train: CandleArrays, window: int, holdout_fraction: float) -> int:
    """First row of the train window's holdout, as :func:`forecaster.features.prepare` cuts it."""
    return slice_bounds(len(train), 0.0, holdout_fraction)[1]


def holdout_distributions(
    train: CandleArrays,
    names: Sequence[str],
    *,
    window: int,
    holdout_fraction: float,
    ar_lags: int,
    level: float,
    lstm: Any | None,
    context: Mapping[str, Any],
) -> tuple[np.ndarray, dict[str, ReturnDistribution]]:
    """``(outcomes, distributions)`` of every candidate on the train window's holdout rows."""
    split = holdout_split(train, window, holdout_fraction)
    rows = target_rows(train, max(window, ar_lags), split)
    if rows.size == 0:
        return np.empty(0), {}
    y = np.log(train.close[rows] / train.close[rows - 1])
    before = train.slice(0, split)
    dists: dict[str, ReturnDistribution] = {}
    vol = [n for n in names if n in VOL_MODELS]
    if vol:
        fitted = fit_vol_models(vol, log_returns(before), context)
        dists.update(vol_distributions(fitted, train, 0, rows))
    base = [n for n in names if n in ("naive", "drift", "ar")]
    if base:
        fb: dict[str, FittedBaseline] = fit_baselines(before, base, ar_lags, level)
        hist = return_history(train, rows, ar_lags)
        for n, b in fb.items():
            dists[n] = model_distribution(b, train, rows, b.model.predict(hist), level)
    if lstm is not None and "lstm" in names:
        pred, ok = lstm.predict_returns(train, rows)
        if ok.all():
            dists["lstm"] = model_distribution(lstm, train, rows, pred, level)
    return y, dists


def champion_by_crps(
    y: np.ndarray, dists: Mapping[str, ReturnDistribution], order: Sequence[str]
) -> tuple[str | None, dict[str, float]]:
    """The model with the lowest mean CRPS on ``y`` (ties: first in ``order``), and the CRPS."""
    crps = {n: float(np.mean(dists[n].crps(y))) for n in order if n in dists and y.size}
    finite = {n: c for n, c in crps.items() if np.isfinite(c)}
    if not finite:
        return None, crps
    return min(finite, key=lambda n: (finite[n], list(order).index(n))), crps

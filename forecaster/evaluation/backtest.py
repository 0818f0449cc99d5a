"""Walk-forward backtest: retrain as the live service does, predict only from the past.

The protocol (like FreqAI's backtesting or Darts' ``historical_forecasts`` with retraining):

- The test span is the last ``test_candles`` candles (by open time). It is cut into folds of
  ``retrain_every`` candles, counted by open time too, so a hole does not shift the schedule.
- At the start of each fold, every model is trained on the ``train_window`` candles *before* the
  fold (rows ``< fold.start``), exactly as ``forecaster.training.job`` does in production: the same
  :func:`forecaster.training.train.train` (same slices, scaler fit on its train slice, early
  stopping), warm-started from the serving model, then
  :func:`forecaster.training.promotion.decide_promotion` decides whether the new model or the old
  one serves the fold.
- Each test point (a target candle with a full window inside its segment; the same points for
  every model) is predicted from the candles before it only. Nothing a model or a scaler sees
  depends on a candle after the prediction's ``as_of`` -- except the ``seed`` model, which is the
  seeds' recipe kept to show the leak (see :mod:`forecaster.evaluation.seed_model`); it is marked
  ``lookahead``.
- Baselines (naive, drift, AR(p) on returns) are refit per fold on the same train window; their
  prediction intervals come from the quantiles of their residuals on that window.
- The econometric models (``ewma``, ``garch``, ``static``; :mod:`forecaster.econometric`) are
  fitted per fold on the same train window and filtered forward with fixed parameters.
- Every model but ``seed`` yields a predictive distribution of the next log return at every
  point (:mod:`forecaster.evaluation.models`). ``published`` is what the service would publish:
  per fold the champion by CRPS on the train window's holdout, its central interval at the
  level adaptive conformal inference (:mod:`forecaster.calibration`) sets from the misses of
  the points before, one state carried through the whole test span as the live service does.

TensorFlow is imported only when the ``lstm`` or ``seed`` model runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from config.settings import ModelSettings
from core.model_meta import ModelMeta
from forecaster.baselines import return_history
from forecaster.calibration import AciState, run_aci
from forecaster.data import CandleArrays
from forecaster.distribution import ReturnDistribution
from forecaster.evaluation.models import (
    VOL_MODELS,
    FittedBaseline,
    champion_by_crps,
    fit_baselines,
    fit_vol_models,
    holdout_distributions,
    in_sample_naive_mae,
    lstm_fold,
    model_distribution,
    series_context,
    vol_distributions,
)
from forecaster.evaluation.walkforward import (
    DISTRIBUTION_MODELS,
    MODEL_NAMES,
    PUBLISHED,
    BacktestOptions,
    BacktestResult,
    Fold,
    ModelRun,
    empty_run,
    plan_folds,
)
from forecaster.features import FeatureError, log_returns
from forecaster.metrics import price_from_return

if TYPE_CHECKING:
    from forecaster.inference import LoadedModel

__all__ = [
    "DISTRIBUTION_MODELS",
    "MODEL_NAMES",
    "PUBLISHED",
    "BacktestOptions",
    "BacktestResult",
    "FittedBaseline",
    "Fold",
    "ModelRun",
    "plan_folds",
    "run_backtest",
]

log = structlog.get_logger(__name__)


def run_backtest(
    arrays: CandleArrays,
    settings: ModelSettings,
    options: BacktestOptions,
    *,
    series: str,
    on_fold: Callable[[Fold, dict[str, Any]], None] | None = None,
) -> BacktestResult:
    """Run the walk-forward backtest of ``options.models`` on ``arrays`` (see module docstring).

    ``settings`` are the live model settings; ``train_candles`` is replaced by
    ``options.train_window``. ``on_fold`` is called after each fold (progress reporting).
    """
    t_all = time.perf_counter()
    settings = settings.model_copy(update={"train_candles": options.train_window})
    window = max(settings.window, options.ar_lags)
    folds, points = plan_folds(arrays, options, window)
    n = points.size
    slot = {int(r): i for i, r in enumerate(points)}
    names = [m for m in MODEL_NAMES if m in options.models]
    runs = {m: empty_run(m, n, m != "seed") for m in names}
    candidates = [m for m in DISTRIBUTION_MODELS if m in names]
    publish = options.publish and bool(candidates)
    ctx = series_context(series, arrays)
    level = settings.interval_level
    champions: list[str] = [""] * n
    fold_of = np.full(n, -1, dtype=np.int64)
    scale = np.full(n, np.nan)
    fold_scales: list[float] = []
    base_names = [m for m in names if m in ("naive", "drift", "ar")]
    vol_names = [m for m in names if m in VOL_MODELS]

    serving: LoadedModel | None = None
    serving_meta: ModelMeta | None = None
    seed_fit: Any = None
    seed_scaler: Any = None
    if "seed" in names:
        from forecaster.evaluation.seed_model import LevelScaler  # noqa: PLC0415 (pulls in TensorFlow; loaded only when the LSTM runs)

        seed_scaler = LevelScaler.fit_whole_series(arrays)  # the leak, on purpose
    baselines: dict[str, FittedBaseline] = {}

    for fold in folds:
        train = arrays.slice(fold.train_start, fold.start)
        # Everything a fold predicts is computed from the candles before its last target.
        known = arrays.slice(0, fold.stop)
        where = np.array([slot[int(r)] for r in fold.rows], dtype=np.int64)
        fold_of[where] = fold.number
        fold_scale = in_sample_naive_mae(train)
        fold_scales.append(fold_scale)
        scale[where] = fold_scale
        last = known.close[fold.rows - 1]
        info: dict[str, Any] = {"fold": fold.number}

        if base_names:
            t0 = time.perf_counter()
            baselines = fit_baselines(train, base_names, options.ar_lags, settings.interval_level)
            hist = return_history(known, fold.rows, options.ar_lags)
            spent = time.perf_counter() - t0
            for name, fb in baselines.items():
                r = fb.model.predict(hist)
                dist = model_distribution(fb, known, fold.rows, r, level)
                _store(runs[name], where, r, last, dist, level)
                runs[name].train_seconds += spent / len(baselines)

        if vol_names:
            t0 = time.perf_counter()
            fitted = fit_vol_models(vol_names, log_returns(train), ctx)
            dists = vol_distributions(fitted, known, fold.train_start, fold.rows)
            spent = time.perf_counter() - t0
            for name, m in fitted.items():
                run = runs[name]
                run.train_seconds += spent / len(fitted)
                run.folds.append({"fold": fold.number, **m.to_dict()})
                if fold.rows.size:
                    d = dists[name]
                    _store(run, where, d.loc, last, d, level)

        if "lstm" in names:
            serving, serving_meta, lstm_info = lstm_fold(
                train, settings, options.max_model_age, serving, serving_meta
            )
            run = runs["lstm"]
            run.train_seconds += lstm_info["train_seconds"]
            run.folds.append({"fold": fold.number, **lstm_info})
            info["lstm"] = lstm_info
            if fold.rows.size:
                r, ok = serving.predict_returns(known, fold.rows)
                if not ok.all():  # cannot happen with the common points; guard the invariant
                    raise FeatureError("the LSTM has no window for a test point")
                dist = model_distribution(serving, known, fold.rows, r, level)
                _store(run, where, r, last, dist, level)

        if publish and fold.rows.size:
            y_ho, d_ho = holdout_distributions(
                train, candidates, window=settings.window,
                holdout_fraction=settings.holdout_fraction, ar_lags=options.ar_lags,
                level=level, lstm=serving if "lstm" in names else None, context=ctx,
            )  # fmt: skip
            champ, ho_crps = champion_by_crps(y_ho, d_ho, candidates)
            if champ is None:  # an empty holdout: keep the previous champion, else the first
                champ = next((c for c in reversed(champions) if c), candidates[0])
            for i in where.tolist():
                champions[i] = champ
            info["published"] = {"champion": champ, "holdout_crps": ho_crps}

        if "seed" in names:
            from forecaster.evaluation.seed_model import fit_seed, predict_seed  # noqa: PLC0415 (pulls in TensorFlow; loaded only when the LSTM runs)

            seed_fit = fit_seed(train, seed_scaler, settings, seed_fit)
            run = runs["seed"]
            run.train_seconds += seed_fit.seconds
            seed_info = {
                "train_seconds": round(seed_fit.seconds, 3),
                "epochs_run": seed_fit.epochs_run,
                "warm_started": seed_fit.warm_started,
            }
            run.folds.append({"fold": fold.number, **seed_info})
            info["seed"] = seed_info
            p = predict_seed(seed_fit, known, fold.rows, seed_scaler, settings.window)
            run.pred[where] = p
            run.pred_return[where] = np.log(p / last)

        log.debug("backtest_fold", fold=fold.number, points=int(fold.rows.size))
        if on_fold is not None:
            on_fold(fold, info)

    if publish:
        runs[PUBLISHED] = _published(runs, champions, arrays, points, level, options.aci_gamma)

    return BacktestResult(
        series=series,
        arrays=arrays,
        options=options,
        settings=settings,
        folds=folds,
        rows=points,
        fold_of=fold_of,
        mase_scale=scale,
        models=runs,
        fold_scales=fold_scales,
        final_lstm=serving,
        final_baselines=baselines,
        seconds=time.perf_counter() - t_all,
    )


def _store(
    run: ModelRun,
    where: np.ndarray,
    r: np.ndarray,
    last: np.ndarray,
    dist: ReturnDistribution,
    level: float,
) -> None:
    """Point forecast, distribution and its central interval (prices) of one fold's points."""
    run.pred_return[where] = r
    run.pred[where] = price_from_return(last, r)
    assert run.loc is not None and run.scale is not None and run.df is not None
    run.loc[where], run.scale[where], run.df[where] = dist.loc, dist.scale, dist.df
    lo, hi = dist.interval(level)
    if run.lower is not None and run.upper is not None and run.level is not None:
        run.lower[where] = price_from_return(last, lo)
        run.upper[where] = price_from_return(last, hi)
        run.level[where] = level


def _published(
    runs: dict[str, ModelRun],
    champions: list[str],
    arrays: CandleArrays,
    points: np.ndarray,
    level: float,
    gamma: float,
) -> ModelRun:
    """The champion's forecast at each point, its interval at the ACI-adjusted level."""
    n = points.size
    run = empty_run(PUBLISHED, n, True)
    run.champion = list(champions)
    for name in set(champions):
        idx = np.array([i for i, c in enumerate(champions) if c == name], dtype=np.int64)
        src = runs[name]
        for f in ("pred_return", "pred", "loc", "scale", "df"):
            getattr(run, f)[idx] = getattr(src, f)[idx]
    dist = run.distribution()
    if dist is None:
        raise FeatureError("the published model has no distribution for a test point")
    last = arrays.close[points - 1]
    y = np.log(arrays.close[points] / last)
    lo, hi, lv, _ = run_aci(dist, y, AciState(target=level, gamma=gamma))
    run.lower, run.upper, run.level = price_from_return(last, lo), price_from_return(last, hi), lv
    return run

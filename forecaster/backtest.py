"""Walk-forward backtest: retrain as the live service does, predict only from the past.

The protocol (like FreqAI's backtesting or Darts' ``historical_forecasts`` with retraining):

- The test span is the last ``test_candles`` candles (by open time). It is cut into folds of
  ``retrain_every`` candles, counted by open time too, so a hole does not shift the schedule.
- At the start of each fold, every model is trained on the ``train_window`` candles *before* the
  fold (rows ``< fold.start``), exactly as ``forecaster.train_job`` does in production: the same
  :func:`forecaster.training.train` (same slices, scaler fit on its train slice, early stopping),
  warm-started from the serving model, then :func:`forecaster.promotion.decide_promotion` decides
  whether the new model or the old one serves the fold.
- Each test point (a target candle with a full window inside its segment; the same points for
  every model) is predicted from the candles before it only. Nothing a model or a scaler sees
  depends on a candle after the prediction's ``as_of`` -- except the ``seed`` model, which is the
  seeds' recipe kept to show the leak (see :mod:`forecaster.seed_model`); it is marked
  ``lookahead``.
- Baselines (naive, drift, AR(p) on returns) are refit per fold on the same train window; their
  prediction intervals come from the quantiles of their residuals on that window.

TensorFlow is imported only when the ``lstm`` or ``seed`` model runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from config.settings import ModelSettings
from forecaster.baselines import ARBaseline, Baseline, DriftBaseline, NaiveBaseline, return_history
from forecaster.data import CandleArrays
from forecaster.features import FeatureError, target_rows
from forecaster.metrics import price_from_return

if TYPE_CHECKING:
    from forecaster.inference import LoadedModel

__all__ = [
    "MODEL_NAMES",
    "BacktestOptions",
    "BacktestResult",
    "FittedBaseline",
    "Fold",
    "ModelRun",
    "plan_folds",
    "run_backtest",
]

log = structlog.get_logger(__name__)

MODEL_NAMES = ("lstm", "seed", "naive", "drift", "ar")
LOOKAHEAD_MODELS = frozenset({"seed"})


@dataclass(frozen=True, slots=True)
class BacktestOptions:
    """How the walk-forward runs (all counts in candles of the series)."""

    test_candles: int
    retrain_every: int
    train_window: int
    models: tuple[str, ...] = MODEL_NAMES
    ar_lags: int = 5
    max_model_age: int = 1440

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be among {', '.join(MODEL_NAMES)}, got {unknown}")
        if min(self.test_candles, self.retrain_every, self.train_window) < 1:
            raise ValueError("test_candles, retrain_every and train_window must be positive")


@dataclass(frozen=True, slots=True)
class Fold:
    """One retraining: train on rows ``[train_start, start)``, predict target rows in the fold."""

    number: int
    start: int  # first row after the training data
    stop: int  # first row of the next fold
    train_start: int
    rows: np.ndarray  # test target rows in [start, stop)


@dataclass(frozen=True, slots=True)
class FittedBaseline:
    """A baseline fitted on one train window, with its residual quantiles (log return)."""

    model: Baseline
    q_low: float
    q_high: float


@dataclass(slots=True)
class ModelRun:
    """One model's walk-forward output, aligned with :attr:`BacktestResult.rows`."""

    name: str
    pred_return: np.ndarray
    pred: np.ndarray  # price
    lower: np.ndarray | None
    upper: np.ndarray | None
    train_seconds: float = 0.0
    lookahead: bool = False
    folds: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class BacktestResult:
    """Everything the report needs: points, per-model predictions, folds, settings."""

    series: str
    arrays: CandleArrays
    options: BacktestOptions
    settings: ModelSettings
    folds: list[Fold]
    rows: np.ndarray
    fold_of: np.ndarray  # fold number per point
    mase_scale: np.ndarray  # per point: its fold's in-sample naive MAE
    models: dict[str, ModelRun]
    fold_scales: list[float] = field(default_factory=list)
    final_lstm: LoadedModel | None = None
    final_baselines: dict[str, FittedBaseline] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def actual(self) -> np.ndarray:
        return self.arrays.close[self.rows]

    @property
    def last_close(self) -> np.ndarray:
        return self.arrays.close[self.rows - 1]

    @property
    def target_time(self) -> np.ndarray:
        return self.arrays.open_time[self.rows]

    @property
    def as_of(self) -> np.ndarray:
        """Open time of the last candle each prediction was made from."""
        return self.arrays.open_time[self.rows - 1]


def plan_folds(
    arrays: CandleArrays, options: BacktestOptions, window: int
) -> tuple[list[Fold], np.ndarray]:
    """Folds over the last ``options.test_candles`` candles and the common test target rows.

    A test point needs a full window of ``window`` candles inside its segment (as serving does),
    so the points right after a hole are skipped, for every model alike.
    """
    n = len(arrays)
    idx = arrays.index
    # The span is counted in candles (open times), not rows, like the retrain schedule.
    first, k = int(idx[-1]) - options.test_candles + 1, options.retrain_every
    test_start = int(np.searchsorted(idx, first, side="left"))
    if test_start < window + 2:
        raise FeatureError(
            f"{n} candles leave no training data before a test span of {options.test_candles}"
        )
    points = target_rows(arrays, window, test_start)
    folds: list[Fold] = []
    number = 0
    while first + number * k <= int(idx[-1]):
        lo = first + number * k
        start = int(np.searchsorted(idx, lo, side="left"))
        stop = int(np.searchsorted(idx, lo + k, side="left"))
        rows = points[(points >= start) & (points < stop)]
        folds.append(Fold(number, start, stop, max(0, start - options.train_window), rows))
        number += 1
    return folds, points


def _in_sample_naive_mae(train: CandleArrays) -> float:
    # MASE denominator: the naive forecast's MAE on consecutive candles of the train window.
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


def _empty_run(name: str, n: int, intervals: bool) -> ModelRun:
    nan = np.full(n, np.nan)
    return ModelRun(
        name=name,
        pred_return=nan.copy(),
        pred=nan.copy(),
        lower=nan.copy() if intervals else None,
        upper=nan.copy() if intervals else None,
        lookahead=name in LOOKAHEAD_MODELS,
    )


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
    runs = {m: _empty_run(m, n, m != "seed") for m in names}
    fold_of = np.full(n, -1, dtype=np.int64)
    scale = np.full(n, np.nan)
    fold_scales: list[float] = []
    base_names = [m for m in names if m in ("naive", "drift", "ar")]

    serving: LoadedModel | None = None
    serving_meta: dict[str, Any] | None = None
    seed_fit: Any = None
    seed_scaler: Any = None
    if "seed" in names:
        from forecaster.seed_model import LevelScaler

        seed_scaler = LevelScaler.fit_whole_series(arrays)  # the leak, on purpose
    baselines: dict[str, FittedBaseline] = {}

    for fold in folds:
        train = arrays.slice(fold.train_start, fold.start)
        # Everything a fold predicts is computed from the candles before its last target.
        known = arrays.slice(0, fold.stop)
        where = np.array([slot[int(r)] for r in fold.rows], dtype=np.int64)
        fold_of[where] = fold.number
        fold_scale = _in_sample_naive_mae(train)
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
                _store(runs[name], where, r, last, fb.q_low, fb.q_high)
                runs[name].train_seconds += spent / len(baselines)

        if "lstm" in names:
            serving, serving_meta, lstm_info = _lstm_fold(
                train, settings, options, serving, serving_meta
            )
            run = runs["lstm"]
            run.train_seconds += lstm_info["train_seconds"]
            run.folds.append({"fold": fold.number, **lstm_info})
            info["lstm"] = lstm_info
            if fold.rows.size:
                r, ok = serving.predict_returns(known, fold.rows)
                if not ok.all():  # cannot happen with the common points; guard the invariant
                    raise FeatureError("the LSTM has no window for a test point")
                _store(run, where, r, last, serving.q_low, serving.q_high)

        if "seed" in names:
            from forecaster.seed_model import fit_seed, predict_seed

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
    run: ModelRun, where: np.ndarray, r: np.ndarray, last: np.ndarray, q_lo: float, q_hi: float
) -> None:
    run.pred_return[where] = r
    run.pred[where] = price_from_return(last, r)
    if run.lower is not None and run.upper is not None:
        run.lower[where] = price_from_return(last, r + q_lo)
        run.upper[where] = price_from_return(last, r + q_hi)


def _lstm_fold(
    train: CandleArrays,
    settings: ModelSettings,
    options: BacktestOptions,
    serving: LoadedModel | None,
    serving_meta: dict[str, Any] | None,
) -> tuple[LoadedModel, dict[str, Any], dict[str, Any]]:
    """One scheduled retrain, as ``forecaster.train_job.train_series`` does it."""
    from forecaster.promotion import decide_promotion
    from forecaster.training import train as train_model

    t0 = time.perf_counter()
    result = train_model(train, settings, current=serving, warm_start=True)
    seconds = time.perf_counter() - t0
    tf = train.timeframe
    expired = serving_meta is not None and (
        int(train.index[-1]) - tf.index(int(serving_meta["training_range"]["last_open_time"]))
        > options.max_model_age
    )
    decision = decide_promotion(result.meta, serving_meta, expired)
    info = {
        "train_seconds": round(seconds, 3),
        "epochs_run": result.meta["epochs_run"],
        "best_epoch": result.meta["best_epoch"],
        "warm_started": result.meta["warm_started"],
        "holdout_skill": result.meta["skill"],
        "promoted": decision.promote,
        "reason": decision.reason,
        "train_first_time": result.meta["training_range"]["first_open_time"],
        "train_last_time": result.meta["training_range"]["last_open_time"],
    }
    if decision.promote or serving is None:
        # serving is None only when the very first model had no valid score: serve it anyway,
        # the backtest must predict something (the live service would publish nothing).
        return result.model, result.meta, info
    assert serving_meta is not None
    return serving, serving_meta, info

"""What a walk-forward backtest runs on and hands back: its options, its folds (the retraining
schedule and the common test points), each model's run and the whole result.

The protocol is described in :mod:`forecaster.evaluation.backtest`, which runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from config.settings import ModelSettings
from forecaster.calibration import DEFAULT_GAMMA
from forecaster.data import CandleArrays
from forecaster.distribution import PUBLISHED_QUANTILES, ReturnDistribution
from forecaster.evaluation.models import FittedBaseline
from forecaster.features import FeatureError, target_rows

if TYPE_CHECKING:
    from forecaster.inference import LoadedModel

__all__ = [
    "DISTRIBUTION_MODELS",
    "LOOKAHEAD_MODELS",
    "MODEL_NAMES",
    "PUBLISHED",
    "BacktestOptions",
    "BacktestResult",
    "Fold",
    "ModelRun",
    "empty_run",
    "plan_folds",
]

MODEL_NAMES = ("lstm", "seed", "naive", "drift", "ar", "ewma", "garch", "static")
# Models with a predictive distribution: the candidates for what is published.
DISTRIBUTION_MODELS = ("lstm", "naive", "drift", "ar", "ewma", "garch", "static")
PUBLISHED = "published"
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
    publish: bool = True  # add the ``published`` model (champion after calibration)
    aci_gamma: float = DEFAULT_GAMMA

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
    # The predictive distribution of the next log return per point (NaN: none, e.g. seed).
    loc: np.ndarray | None = None
    scale: np.ndarray | None = None
    df: np.ndarray | None = None
    level: np.ndarray | None = None  # interval level per point (published: ACI's)
    champion: list[str] | None = None  # published: the model published at each point

    def distribution(self) -> ReturnDistribution | None:
        """The per-point distributions, or ``None`` for a model without one."""
        if self.loc is None or self.scale is None or self.df is None:
            return None
        if not (np.isfinite(self.loc).all() and np.isfinite(self.scale).all()):
            return None
        return ReturnDistribution(self.loc, self.scale, self.df)

    def quantiles(self) -> np.ndarray | None:
        """Quantiles of the next log return at :data:`PUBLISHED_QUANTILES`, ``(n, 5)``."""
        d = self.distribution()
        return None if d is None else d.quantiles(PUBLISHED_QUANTILES)


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


def empty_run(name: str, n: int, intervals: bool) -> ModelRun:
    """A run of ``n`` points yet to be predicted (NaN), with distribution arrays when
    ``intervals``."""
    nan = np.full(n, np.nan)
    return ModelRun(
        name=name,
        pred_return=nan.copy(),
        pred=nan.copy(),
        lower=nan.copy() if intervals else None,
        upper=nan.copy() if intervals else None,
        lookahead=name in LOOKAHEAD_MODELS,
        loc=nan.copy() if intervals else None,
        scale=nan.copy() if intervals else None,
        df=nan.copy() if intervals else None,
        level=nan.copy() if intervals else None,
    )

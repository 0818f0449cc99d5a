"""Baseline forecasters of the next log return: naive, drift and AR(p).

Each works on a *history matrix* of past log returns, shape ``(m, k)`` with the most recent
return last (see :func:`return_history`), so the same windows (inside contiguous segments,
never across a hole) feed the baselines, the LSTM and the backtest. ``fit`` must only ever be
given the training slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from forecaster.data import CandleArrays
from forecaster.features import log_returns

__all__ = [
    "ARBaseline",
    "Baseline",
    "DriftBaseline",
    "NaiveBaseline",
    "return_history",
]


class Baseline(Protocol):
    """A next-return forecaster fitted on training windows only."""

    name: str
    lags: int

    def fit(self, history: np.ndarray, target: np.ndarray) -> Baseline: ...

    def predict(self, history: np.ndarray) -> np.ndarray: ...


def return_history(arrays: CandleArrays, rows: np.ndarray, k: int) -> np.ndarray:
    """Log returns of rows ``t-k .. t-1`` for each target row ``t``, shape ``(len(rows), k)``.

    ``rows`` must come from :func:`forecaster.features.target_rows` with a window ``>= k`` so no
    history crosses a hole.
    """
    ret = log_returns(arrays)
    if k == 0:
        return np.empty((rows.size, 0), dtype=np.float64)
    idx = rows[:, None] + np.arange(-k, 0)[None, :]
    return ret[idx]


@dataclass
class NaiveBaseline:
    """Next close = last close: a predicted log return of exactly 0."""

    name: str = "naive"
    lags: int = 0

    def fit(self, history: np.ndarray, target: np.ndarray) -> NaiveBaseline:
        """Nothing to learn."""
        return self

    def predict(self, history: np.ndarray) -> np.ndarray:
        """Zeros, one per row."""
        return np.zeros(history.shape[0], dtype=np.float64)


@dataclass
class DriftBaseline:
    """The mean training log return, every time (the random walk with drift)."""

    name: str = "drift"
    lags: int = 0
    mean: float = 0.0

    def fit(self, history: np.ndarray, target: np.ndarray) -> DriftBaseline:
        """Mean of the training targets."""
        t = np.asarray(target, dtype=np.float64)
        self.mean = float(np.nanmean(t)) if t.size else 0.0
        return self

    def predict(self, history: np.ndarray) -> np.ndarray:
        """The training mean, one per row."""
        return np.full(history.shape[0], self.mean, dtype=np.float64)


@dataclass
class ARBaseline:
    """AR(p) on log returns with an intercept, fitted by least squares."""

    lags: int = 5
    name: str = "ar"
    coef: np.ndarray = field(default_factory=lambda: np.zeros(1))  # intercept, then lag 1..p

    def fit(self, history: np.ndarray, target: np.ndarray) -> ARBaseline:
        """Least squares on the last ``lags`` columns of ``history``."""
        h = self._lagged(history)
        ok = ~(np.isnan(h).any(axis=1) | np.isnan(target))
        design = np.column_stack([np.ones(int(ok.sum())), h[ok]])
        self.coef, *_ = np.linalg.lstsq(design, np.asarray(target, np.float64)[ok], rcond=None)
        return self

    def predict(self, history: np.ndarray) -> np.ndarray:
        """Intercept plus the lag coefficients times the last ``lags`` returns."""
        h = self._lagged(history)
        return self.coef[0] + h @ self.coef[1:]

    def _lagged(self, history: np.ndarray) -> np.ndarray:
        if history.shape[1] < self.lags:
            got = history.shape[1]
            raise ValueError(f"AR({self.lags}) needs {self.lags} past returns, got {got}")
        # Column j of the result is lag j+1 (most recent first), matching coef[1:].
        return np.asarray(history[:, ::-1][:, : self.lags], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FittedBaseline:
    """A baseline fitted on one train window, with its residual quantiles (log return)."""

    model: Baseline
    q_low: float
    q_high: float

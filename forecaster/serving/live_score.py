"""Live scoring: each prediction is scored when its target candle closes.

Rolling over the last ``window`` scored predictions of a series: MAE of the model and of the
naive forecast (last close) on the same targets, relative MAE = MAE / naive MAE (< 1 beats
naive; not the backtest's MASE, which scales by the naive MAE in sample, see
:mod:`storage.scores`),
direction hit rate on candles that moved, interval coverage (of the published, calibrated
interval) and the mean CRPS of the published distribution of the log return (when the
prediction came with one; a proper score, lower is better, comparable across model kinds).
Figures are kept per model
version too, so an operator sees whether the model serving *now* works, not only at training.
Sums are updated as scores enter and leave the window: scoring costs O(1) on the serving path.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core.schemas import Candle, Prediction
from forecaster.distribution import crps_one
from storage.scores import LEGACY_RELATIVE_MAE, RELATIVE_MAE


@dataclass(frozen=True, slots=True)
class _Score:
    abs_err: float
    naive_abs_err: float
    hit: bool | None  # None: the candle did not move
    covered: bool
    version: str
    crps: float | None = None


@dataclass(slots=True)
class _Sums:
    n: int = 0
    abs_err: float = 0.0
    naive_abs_err: float = 0.0
    moved: int = 0
    hits: int = 0
    covered: int = 0
    n_crps: int = 0
    crps: float = 0.0

    def add(self, s: _Score, sign: int) -> None:
        self.n += sign
        self.abs_err += sign * s.abs_err
        self.naive_abs_err += sign * s.naive_abs_err
        if s.hit is not None:
            self.moved += sign
            self.hits += sign * s.hit
        self.covered += sign * s.covered
        if s.crps is not None:
            self.n_crps += sign
            self.crps += sign * s.crps

    def summary(self) -> dict[str, Any]:
        n = self.n
        mae, naive = self.abs_err / n, self.naive_abs_err / n
        relative = mae / naive if naive > 0 else None
        return {
            "n": n,
            "mae": mae,
            "naive_mae": naive,
            RELATIVE_MAE: relative,
            LEGACY_RELATIVE_MAE: relative,
            "direction": self.hits / self.moved if self.moved else None,
            "coverage": self.covered / n,
            "crps": self.crps / self.n_crps if self.n_crps > 0 else None,
        }


@dataclass
class LiveScorer:
    """Pending predictions by target time, and the rolling window of scored ones."""

    window: int = 500
    _pending: dict[int, Prediction] = field(default_factory=dict)
    _dists: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    _scores: deque[_Score] = field(default_factory=deque)
    _all: _Sums = field(default_factory=_Sums)
    _by_version: dict[str, _Sums] = field(default_factory=dict)

    def predicted(self, p: Prediction, dist: tuple[float, float, float] | None = None) -> None:
        """Remember ``p`` (and its distribution's ``loc, scale, df``) until its candle closes."""
        self._pending[p.target_time] = p
        if dist is not None:
            self._dists[p.target_time] = dist
        if len(self._pending) > 16:  # targets that never closed (holes): forget the oldest
            oldest = min(self._pending)
            del self._pending[oldest]
            self._dists.pop(oldest, None)

    def closed(self, candle: Candle) -> bool:
        """Score the prediction made for ``candle``, if there was one; True when scored."""
        p = self._pending.pop(candle.open_time, None)
        dist = self._dists.pop(candle.open_time, None)
        if p is None or not math.isfinite(candle.close):
            return False
        crps = None
        if dist is not None:
            r = math.log(candle.close / p.last_close)
            # Checked when it was published (Forecast.of): no second validation on the hot path.
            crps = crps_one(*dist, r)
        move = candle.close - p.last_close
        predicted_move = p.predicted_close - p.last_close
        score = _Score(
            abs_err=abs(candle.close - p.predicted_close),
            naive_abs_err=abs(move),
            hit=None if move == 0 else (move > 0) == (predicted_move > 0),
            covered=p.lower <= candle.close <= p.upper,
            version=p.model.version,
            crps=crps if crps is not None and math.isfinite(crps) else None,
        )
        self._scores.append(score)
        self._all.add(score, +1)
        self._by_version.setdefault(score.version, _Sums()).add(score, +1)
        while len(self._scores) > self.window:
            old = self._scores.popleft()
            self._all.add(old, -1)
            sums = self._by_version[old.version]
            sums.add(old, -1)
            if sums.n == 0:
                del self._by_version[old.version]
        return True

    def figures(self) -> dict[str, Any]:
        """What goes into the live-score hash (see :mod:`storage.scores`)."""
        if not self._scores:
            return {}
        current = self._scores[-1].version
        return {
            **self._all.summary(),
            "window": self.window,
            "model": current,
            "model_figures": self._by_version[current].summary(),
        }

"""Live scoring: each prediction is scored when its target candle closes.

Rolling over the last ``window`` scored predictions of a series: MAE of the model and of the
naive forecast (last close) on the same targets, MASE = MAE / naive MAE (< 1 beats naive),
direction hit rate on candles that moved, and interval coverage. Figures are kept per model
version too, so an operator sees whether the model serving *now* works, not only at training.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from storage.schemas import Candle, Prediction


@dataclass(frozen=True, slots=True)
class _Score:
    abs_err: float
    naive_abs_err: float
    hit: bool | None  # None: the candle did not move
    covered: bool
    version: str


def _summary(scores: list[_Score]) -> dict[str, Any]:
    n = len(scores)
    mae = sum(s.abs_err for s in scores) / n
    naive = sum(s.naive_abs_err for s in scores) / n
    moved = [s.hit for s in scores if s.hit is not None]
    return {
        "n": n,
        "mae": mae,
        "naive_mae": naive,
        "mase": mae / naive if naive > 0 else None,
        "direction": sum(moved) / len(moved) if moved else None,
        "coverage": sum(s.covered for s in scores) / n,
    }


@dataclass
class LiveScorer:
    """Pending predictions by target time, and the rolling window of scored ones."""

    window: int = 500
    _pending: dict[int, Prediction] = field(default_factory=dict)
    _scores: deque[_Score] = field(default_factory=deque)

    def predicted(self, p: Prediction) -> None:
        self._pending[p.target_time] = p
        if len(self._pending) > 16:  # targets that never closed (holes): forget the oldest
            del self._pending[min(self._pending)]

    def closed(self, candle: Candle) -> bool:
        """Score the prediction made for ``candle``, if there was one; True when scored."""
        p = self._pending.pop(candle.open_time, None)
        if p is None or not math.isfinite(candle.close):
            return False
        move = candle.close - p.last_close
        predicted_move = p.predicted_close - p.last_close
        self._scores.append(
            _Score(
                abs_err=abs(candle.close - p.predicted_close),
                naive_abs_err=abs(move),
                hit=None if move == 0 else (move > 0) == (predicted_move > 0),
                covered=p.lower <= candle.close <= p.upper,
                version=p.model.version,
            )
        )
        while len(self._scores) > self.window:
            self._scores.popleft()
        return True

    def figures(self) -> dict[str, Any]:
        """What goes into the live-score hash (see :mod:`storage.scores`)."""
        if not self._scores:
            return {}
        scores = list(self._scores)
        current = scores[-1].version
        return {
            **_summary(scores),
            "window": self.window,
            "model": current,
            "model_figures": _summary([s for s in scores if s.version == current]),
        }

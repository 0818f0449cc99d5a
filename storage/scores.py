"""Live scores: how the served model does on candles that closed after it predicted them.

Kept per series in one hash (field → JSON value) so ``status``, the web API and bots read the
same figures: rolling MAE of the model and of the naive forecast over the same targets,
``relative_mae`` (their ratio: < 1 beats naive), direction hit rate on candles that moved,
interval coverage, the number of scored predictions and the model version they came from.

``relative_mae`` is not the backtest's MASE (which scales by the naive MAE *in sample*, on the
training window): it compares with the naive forecast on the very targets scored. It was first
published as ``mase``; that field is still written with the same value, for readers of old.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.series import SeriesId
from storage.keys import Keys

__all__ = ["LEGACY_RELATIVE_MAE", "RELATIVE_MAE", "LiveScores", "relative_mae"]

RELATIVE_MAE = "relative_mae"
LEGACY_RELATIVE_MAE = "mase"  # the same figure under its first name, kept: fields only grow


def relative_mae(figures: dict[str, Any] | None) -> float | None:
    """MAE / naive MAE of a live score, whichever version of the forecaster wrote it."""
    if not figures:
        return None
    value = figures.get(RELATIVE_MAE, figures.get(LEGACY_RELATIVE_MAE))
    return None if value is None else float(value)


class LiveScores:
    """The live-score hash of each series."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def write(self, series: SeriesId, figures: dict[str, Any]) -> None:
        await self.redis.hset(
            self.keys.live_score(series), mapping={k: orjson.dumps(v) for k, v in figures.items()}
        )

    async def read(self, series: SeriesId) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.live_score(series))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None

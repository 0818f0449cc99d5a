"""Live scores: how the served model does on candles that closed after it predicted them.

Kept per series in one hash (field → JSON value) so ``status``, the web API and bots read the
same figures: rolling MAE of the model and of the naive forecast over the same targets, MASE
(their ratio: < 1 beats naive), direction hit rate on candles that moved, interval coverage,
the number of scored predictions and the model version they came from.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.series import SeriesId
from storage.keys import Keys


class LiveScores:
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

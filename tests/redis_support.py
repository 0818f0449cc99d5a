"""A fresh Redis for each Hypothesis example (function-scoped fixtures are shared by examples)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from config.settings import Settings
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys


@asynccontextmanager
async def empty_store(settings: Settings) -> AsyncIterator[CandleStore]:
    """A candle store on the test Redis, emptied first, its connection closed on the way out."""
    redis = await connect(settings)
    try:
        await redis.flushall()
        yield CandleStore(redis, Keys())
    finally:
        await redis.aclose()

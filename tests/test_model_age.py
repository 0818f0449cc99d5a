"""A model's age is the number of candles closed since the last one it was trained on, and every
reader reports it the same way: ``status --json`` and ``/api/status`` (they once read a key no
writer stores and always said 0)."""

from __future__ import annotations

import os

import httpx
import orjson

from config.settings import load_settings
from core.clock import WallClock
from core.series import SeriesId, global_model_id
from cryptocast.redis_server import RedisServer
from storage.client import Redis
from storage.facade import Storage
from storage.health import series_health
from tests.e2e_support import status_json
from tests.forecaster_support import btc_candles
from tests.web_support import serve

S = SeriesId.parse("binance:BTC/USDT:1h")


async def test_an_aged_model_reports_its_true_age(
    redis: Redis, storage: Storage, redis_server: RedisServer
) -> None:
    candles = btc_candles(1000)
    store, registry = storage.candles, storage.registry
    await store.upsert(S, candles)
    trained = candles[100]  # trained on candles up to this one: 899 have closed since
    meta = {
        "training_range": {
            "first_open_time": candles[0].open_time,
            "last_open_time": trained.open_time,
        },
        "trained_at": trained.open_time,
        "skill": 0.001,
    }
    subject = global_model_id(S.timeframe)  # the default scope: the timeframe's global model
    await registry.promote(subject, await registry.put(subject, b"weights", meta))

    entry = await series_health(storage, S, WallClock(), stale_after=3, scope="global")
    assert entry["model"]["age_candles"] == 899

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env |= {"CRYPTOCAST_REDIS_URL": redis_server.url, "CRYPTOCAST_SERIES": S.key}
    r = await status_json(env)
    (cli,) = orjson.loads(r.stdout)["series"]
    assert cli["model"]["age_candles"] == 899

    settings = load_settings(redis_url=redis_server.url, series=[S.key])
    async with serve(settings, redis) as base, httpx.AsyncClient(base_url=base) as client:
        api = (await client.get("/api/status")).json()
    assert api["series"][0]["model"]["age_candles"] == 899


async def test_the_last_training_is_that_of_the_model_serving_the_series(storage: Storage) -> None:
    """With the global scope a series has no training of its own: its ``last_training`` is its
    timeframe's global model's (it was always null, whatever had trained)."""
    await storage.candles.upsert(S, btc_candles(10))
    await storage.training_log.record(
        global_model_id(S.timeframe), outcome="promoted", version="v000001", duration_s=1.5
    )
    entry = await series_health(storage, S, WallClock(), stale_after=3, scope="global")
    assert entry["last_training"]["outcome"] == "promoted"
    assert entry["last_training"]["version"] == "v000001"
    own = await series_health(storage, S, WallClock(), stale_after=3, scope="series")
    assert own["last_training"] is None

"""Redis faults: `kill -9` of redis-server mid-stream (AOF on), and Redis missing at start.

Real `cryptocast ingest` and `cryptocast forecast` processes against a redis-server owned by the
test; the 1m futures candles are relabelled as the spot series the replay exchange speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from config.settings import load_settings
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from replay import ReplayExchange
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys
from storage.predictions import PredictionBus
from tests.e2e_support import Service, service_env, start_pipeline, start_replay, wait_for

pytestmark = pytest.mark.slow

SERIES = SeriesId.parse("binance:LINK/USDT:1m")


async def test_redis_killed_mid_stream_and_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    async with contextlib.AsyncExitStack() as cleanup:  # set-up that fails still cleans up
        server.start()
        cleanup.callback(server.stop)
        exchange = await start_replay(["LINK/USDT"], 1800, tmp_path, speed=60)
        cleanup.push_async_callback(exchange.stop)
        ingest, forecast = await _kill_and_restart(server, exchange, tmp_path)
    logs = "\n".join(ingest.log_lines() + forecast.log_lines())
    assert "redis_unavailable" in logs or "worker.failed" in logs  # the outage was reported


async def _kill_and_restart(
    server: RedisServer, exchange: ReplayExchange, tmp_path: Path
) -> tuple[Service, Service]:
    env = service_env(server.url, exchange, [SERIES.key], retrain_every=100000, stale_after=500)
    ingest, forecast = start_pipeline(env, tmp_path)
    settings = load_settings(redis_url=server.url)
    try:
        redis = await connect(settings)
        store, bus = CandleStore(redis, Keys()), PredictionBus(redis, Keys())

        async def predicting() -> bool:
            return await bus.count(SERIES) >= 3

        await wait_for(predicting, 120, "predictions before the kill", on_fail=forecast.tail)
        before = set(await store.open_times(SERIES))
        published_before = await bus.count(SERIES)
        await redis.aclose()

        server.kill()  # kill -9: no shutdown, no final save; AOF (fsync always) has every ack
        await asyncio.sleep(3)  # candles keep closing at the exchange meanwhile
        assert ingest.proc and ingest.proc.poll() is None, ingest.tail()
        assert forecast.proc and forecast.proc.poll() is None, forecast.tail()
        server.start()  # same port, same data directory

        redis = await connect(settings)
        store, bus = CandleStore(redis, Keys()), PredictionBus(redis, Keys())
        after_restart = set(await store.open_times(SERIES))
        assert before <= after_restart, "a candle stored before the kill was lost"

        async def recovered() -> bool:
            times = await store.open_times(SERIES)
            return (
                bool(times)
                and times[-1] > max(before) + 5 * 60_000
                and not await store.holes(SERIES)
                and await bus.count(SERIES) > published_before + 3
            )

        await wait_for(
            recovered,
            90,
            "ingest, gap fill and the forecaster to recover",
            on_fail=lambda: ingest.tail() + forecast.tail(),
        )
        latest = await bus.latest(SERIES)
        assert latest is not None and latest.as_of > max(before)
        await redis.aclose()
    finally:
        for svc in (forecast, ingest):
            assert svc.terminate() == 0, svc.tail()
    return ingest, forecast


async def test_services_wait_for_redis_at_start(tmp_path: Path) -> None:
    """Redis down at start: the service says so and retries instead of exiting."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.callback(server.stop)
        exchange = await start_replay(["LINK/USDT"], 1200, tmp_path, speed=60)
        cleanup.push_async_callback(exchange.stop)
        env = service_env(server.url, exchange, [SERIES.key])
        ingest = Service("ingest", env, tmp_path).start()
        try:

            async def said_so() -> bool:
                return "redis.waiting" in ingest.tail()

            await wait_for(said_so, 30, "ingest to report Redis unreachable", on_fail=ingest.tail)
            assert ingest.proc and ingest.proc.poll() is None, ingest.tail()
            server.start()
            redis = await connect(load_settings(redis_url=server.url))

            async def stored() -> bool:
                return await CandleStore(redis, Keys()).count(SERIES) > 100

            await wait_for(stored, 60, "ingest to start once Redis is up", on_fail=ingest.tail)
            await redis.aclose()
        finally:
            assert ingest.terminate() == 0, ingest.tail()

"""The dashboard's multi-step path: a worker that publishes a prediction has the path of its
series refreshed off the hot path and stored; the web serves slices of it. Real Redis, a real
tiny model, the real web app on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import httpx
import numpy as np
import pytest
from structlog.testing import capture_logs

from config.settings import load_settings
from core.series import SeriesId
from cryptocast.redis_server import RedisServer
from forecaster.data import CandleArrays
from forecaster.horizon import LstmRecursion
from forecaster.inference import LoadedModel
from forecaster.serving.paths import PathRefresher
from forecaster.serving.worker import SeriesWorker, ServingContext
from storage.client import Redis
from storage.facade import Storage
from storage.keys import Keys
from storage.paths import ForecastPath, PathStore
from storage.registry import ModelRecord, ModelRegistry
from tests.e2e_support import wait_for
from tests.forecaster_support import (
    FixedClock,
    btc_arrays,
    btc_candles,
    promote_trained,
    trained_tiny,
)
from tests.web_support import serve

SERIES = SeriesId.parse("binance:BTC/USDT:1h")
OTHER = SeriesId.parse("binance:ETH/USDT:1h")
START = 2800  # the tiny model is trained on the candles before this one


async def _promoted(redis: Redis, keys: Keys) -> ModelRecord:
    result = trained_tiny()
    return await promote_trained(ModelRegistry(redis, keys), SERIES, result, trained_at=1)


async def _refresher_inputs(
    redis: Redis,
) -> tuple[ModelRecord, LoadedModel, CandleArrays, PathStore]:
    """A promoted tiny model's record and model, the candles, and the path store."""
    record = await _promoted(redis, Keys())
    return record, trained_tiny().model, btc_arrays(3000), PathStore(redis, Keys())


async def _stored_at(store: PathStore, series: SeriesId, as_of: int) -> ForecastPath | None:
    path = await store.read(series)
    return path if path is not None and path.as_of == as_of else None


async def test_published_prediction_refreshes_the_stored_path_the_web_serves(
    redis: Redis, redis_server: RedisServer
) -> None:
    storage = Storage.build(redis, Keys())
    record = await _promoted(redis, storage.keys)
    candles = btc_candles(3000)
    store = storage.candles
    await store.upsert(SERIES, list(candles[:START]))
    paths = PathRefresher(storage.paths, 48, settle_s=0.05)
    ctx = ServingContext(
        settings=load_settings(schedule={"stale_after": 10**6}),
        storage=storage,
        clock=FixedClock(candles[-1].open_time + 3_600_000),
        consumer="test",
        paths=paths,
    )
    worker = SeriesWorker(ctx, SERIES)
    await ctx.events.ensure_group(SERIES)
    await worker.holder.load_now()
    model = worker.holder.model
    assert model is not None
    live = list(candles[START : START + 6])
    try:
        for c in live:
            await store.upsert(SERIES, [c], emit_events=True, arrived_ms=int(time.time() * 1000))
            await worker.handle(await ctx.events.read(SERIES, "test", block_ms=None))
        assert worker.stats.published == len(live)
        newest = live[-1].open_time
        stored = await wait_for(
            lambda: _stored_at(paths.store, SERIES, newest), 30, "the newest candle's path"
        )
    finally:
        await paths.close()
    assert paths.failed == 0 and 1 <= paths.refreshed <= len(live)
    assert stored.model.version == record.version and stored.model.kind == "lstm"
    assert stored.model.trained_at == 1 and stored.steps == len(stored.points) == 48
    assert stored.last_close == live[-1].close and stored.interval_level == model.interval_level
    h = SERIES.timeframe.ms
    assert [p.time for p in stored.points] == [newest + k * h for k in range(1, 49)]
    # the recursion: its first step is the one-step forecast of the same window, each price the
    # last close times the summed predicted returns, the interval widening as sqrt(k)
    window = await store.window(SERIES, newest, model.window + 1)
    one = model.predict_next(CandleArrays.from_candles(window, SERIES.timeframe))
    first = stored.points[0]
    assert first.predicted_close == pytest.approx(one.pred_close, rel=1e-5)
    assert first.lower == pytest.approx(one.lower, rel=1e-5)
    cum = math.log(stored.last_close)
    for p in stored.points:
        cum += p.predicted_return
        assert p.predicted_close == pytest.approx(math.exp(cum), rel=1e-9)
        assert p.lower <= p.predicted_close <= p.upper
    widths = [math.log(p.upper / p.lower) for p in stored.points]
    assert widths[-1] == pytest.approx(widths[0] * math.sqrt(48), rel=1e-6)

    settings = load_settings(redis_url=redis_server.url, series=[SERIES.key])
    async with serve(settings, redis) as base, httpx.AsyncClient() as http:
        url = f"{base}/api/series/{SERIES.key}/forecast"
        r = await http.get(url, params={"steps": 24})
        assert r.status_code == 200, r.text
        assert r.json()["points"] == [p.model_dump() for p in stored.points[:24]]
        assert r.json()["model"]["version"] == record.version
        r = await http.get(url, params={"steps": 49})
        assert r.status_code == 422 and "at most 48" in r.json()["detail"]


async def test_refresher_coalesces_logs_a_failure_and_stops_clean(redis: Redis) -> None:
    """A burst of requests for one series costs one path (the newest window); a path that cannot
    be computed is logged with its series and skipped, and the next one is computed; after
    ``close`` nothing runs and nothing more is accepted."""
    record, model, arrays, store = await _refresher_inputs(redis)
    paths = PathRefresher(store, 12, settle_s=0.05)
    try:
        with capture_logs() as logs:
            for end in range(START - 20, START + 1):
                paths.submit(SERIES, model, record, arrays.slice(end - 100, end))
            paths.submit(OTHER, model, record, arrays.slice(START - 10, START))  # too short

            async def settled() -> bool:
                return paths.refreshed + paths.failed >= 2

            await wait_for(settled, 30, "both requests handled")
        assert (paths.refreshed, paths.failed) == (1, 1)
        stored = await store.read(SERIES)
        assert stored is not None and stored.steps == 12
        assert stored.as_of == int(arrays.open_time[START - 1])  # the newest request won
        assert await store.read(OTHER) is None
        failed = [e for e in logs if e["event"] == "path.failed"]
        assert len(failed) == 1 and failed[0]["series"] == OTHER.key
        assert failed[0]["log_level"] == "warning" and failed[0]["version"] == record.version

        paths.submit(SERIES, model, record, arrays.slice(START - 99, START + 1))
        newer = int(arrays.open_time[START])
        await wait_for(lambda: _stored_at(store, SERIES, newer), 30, "the next candle's path")
    finally:
        await paths.close()
    assert paths._task is not None and paths._task.done()
    paths.submit(SERIES, model, record, arrays.slice(START - 98, START + 2))
    assert not paths._pending  # refused after close: no task is started again


async def test_paths_wait_for_a_quiet_moment_but_not_forever(redis: Redis) -> None:
    """While predictions keep coming (requests less than ``settle_s`` apart) no path starts, so
    none competes with them; after the last, the newest is computed once. A never-ending stream
    of requests delays a path by ``max_wait_s`` at most."""
    record, model, arrays, store = await _refresher_inputs(redis)
    paths = PathRefresher(store, 12, settle_s=1.0, max_wait_s=60)
    try:
        for end in range(START - 9, START + 1):
            paths.submit(SERIES, model, record, arrays.slice(end - 100, end))
            await asyncio.sleep(0.05)
            assert paths.refreshed == 0 and await store.read(SERIES) is None
        newest = int(arrays.open_time[START - 1])
        await wait_for(lambda: _stored_at(store, SERIES, newest), 30, "the path after the burst")
        assert paths.refreshed == 1
    finally:
        await paths.close()
    patient = PathRefresher(store, 12, settle_s=3600, max_wait_s=0.2)
    try:
        patient.submit(OTHER, model, record, arrays.slice(START - 100, START))
        await wait_for(lambda: _stored_at(store, OTHER, newest), 30, "the path after max_wait_s")
    finally:
        await patient.close()


def test_a_batch_of_windows_takes_the_path_each_would_take_alone() -> None:
    """The global model's series share one recursion (one forward pass a step): each window's
    returns equal its recursion alone, the network's point used (not the naive fallback) and
    the naive fallback's path flat."""
    arrays = btc_arrays(3000)
    windows = [arrays.slice(end - 100, end) for end in (2800, 2850, 2900)]
    model = dataclasses.replace(trained_tiny().model, naive_point=False)
    together = LstmRecursion(model, windows)
    for _ in range(24):
        together.step()
    for i, w in enumerate(windows):
        alone = LstmRecursion(model, [w])
        for _ in range(24):
            alone.step()
        np.testing.assert_allclose(together.returns()[i], alone.returns()[0], rtol=1e-12, atol=0)
    assert np.all(together.returns() != 0.0) and together.returns().shape == (3, 24)
    naive = LstmRecursion(dataclasses.replace(model, naive_point=True), windows)
    for _ in range(3):
        naive.step()
    assert np.array_equal(naive.returns(), np.zeros((3, 3)))


async def test_no_path_step_runs_while_a_worker_handles_events(redis: Redis) -> None:
    """Marked serving work holds the recursion between two steps (until ``max_wait_s``)."""
    record, model, arrays, store = await _refresher_inputs(redis)
    paths = PathRefresher(store, 12, settle_s=0.0, max_wait_s=60)
    try:
        with paths.serving():
            paths.submit(SERIES, model, record, arrays.slice(START - 100, START))
            for _ in range(20):  # many loop turns, and time: the batch starts, no step runs
                await asyncio.sleep(0.01)
            assert paths.refreshed == 0 and await store.read(SERIES) is None
        newest = int(arrays.open_time[START - 1])
        await wait_for(lambda: _stored_at(store, SERIES, newest), 30, "the path once idle")
    finally:
        await paths.close()

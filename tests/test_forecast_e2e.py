"""End to end: replay exchange → `cryptocast ingest` → Redis → `cryptocast forecast` → a bot.

Real processes, a real redis-server, real websockets on loopback, real TensorFlow (tiny model).
The 1m candles are Binance futures dumps relabelled as the spot series ``binance:X/USDT:1m``
because the replay exchange speaks the spot protocol.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core.lifecycle import with_timeout
from core.model_meta import ModelMeta
from core.schemas import Prediction
from core.series import SeriesId, global_model_id
from cryptocast.redis_server import RedisServer
from forecaster.data import CandleArrays
from forecaster.inference import LoadedModel
from storage.client import Redis
from storage.facade import Storage
from storage.leases import Leases
from storage.predictions import PredictionBus
from tests.e2e_support import Service, service_env, start_pipeline, start_replay, wait_for

pytestmark = pytest.mark.slow

SYMBOLS = ["LINK/USDT", "LTC/USDT"]
SERIES = [SeriesId.parse(f"binance:{s}:1m") for s in SYMBOLS]
SERIES_KEYS = [s.key for s in SERIES]
MODEL = global_model_id(SERIES[0].timeframe)  # the default scope: one model serves both


def tensorflow_mapped(pid: int) -> list[str]:
    """TensorFlow's shared objects mapped into process ``pid`` (importing tensorflow, or Keras
    on its TensorFlow backend, maps them)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines() if "tensorflow" in line})


def _promoted(meta: ModelMeta) -> bool:
    """Whether the training run that stored this version promoted it."""
    return meta.promotion is not None and meta.promotion.promote


async def subscribe(
    redis: Redis,
    bus: PredictionBus,
    out: list[tuple[Prediction, bool]],
    leases: Leases,
    ready: asyncio.Event,
) -> None:
    """An independent bot: every message, and whether a training ran when it arrived."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(bus.keys.predictions(s) for s in SERIES))
    ready.set()
    try:
        async for msg in pubsub.listen():
            if msg["type"] != "message":
                continue
            p = Prediction.from_json(msg["data"])
            training = await leases.holder(MODEL, "train") is not None
            out.append((p, training))
    finally:
        await pubsub.aclose()


async def test_one_prediction_per_closed_candle_from_the_promoted_model(
    redis: Redis, storage: Storage, redis_server: RedisServer, tmp_path: Path
) -> None:
    exchange = await start_replay(SYMBOLS, 1400, tmp_path, speed=90)
    env = service_env(
        redis_server.url, exchange, [s.key for s in SERIES], retrain_every=25, stale_after=30
    )
    ingest, forecast = start_pipeline(env, tmp_path)
    bus, registry, leases = storage.predictions, storage.registry, storage.leases
    store = storage.candles
    received: list[tuple[Prediction, bool]] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(subscribe(redis, bus, received, leases, ready))
    try:
        await with_timeout(ready.wait(), 5)

        async def enough() -> bool:
            per = {s.key: [p for p, _ in received if p.series == s] for s in SERIES}
            trained_during = any(t for _, t in received)
            return all(len(v) >= 40 for v in per.values()) and trained_during

        await wait_for(
            enough,
            150,
            "40 predictions per series, some during a retrain",
            on_fail=lambda: forecast.tail() + ingest.tail(),
        )
        # Serving loaded only numpy artifacts: TensorFlow runs in the training children alone.
        assert forecast.proc is not None
        assert tensorflow_mapped(forecast.proc.pid) == []
    finally:
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        assert forecast.terminate() == 0, forecast.tail()
        assert ingest.terminate() == 0, ingest.tail()
        await exchange.stop()

    assert any(t for _, t in received), "no prediction arrived while a retrain was running"
    models: dict[str, LoadedModel] = {}
    promoted = set()
    assert all([await registry.versions(s) == [] for s in SERIES])  # no model of their own
    for v in await registry.versions(MODEL):
        rec = await registry.get(MODEL, v)
        assert rec.meta.scope == "global" and rec.meta.members == [s.key for s in SERIES]
        if _promoted(rec.meta):
            promoted.add(v)
        models[v] = LoadedModel.from_artifact(rec.artifact, rec.meta)
    for s in SERIES:
        mine = [p for p, _ in received if p.series == s]
        as_ofs = [p.as_of for p in mine]
        # one per closed candle: no repeats, no gaps between the first and the last received
        assert len(as_ofs) == len(set(as_ofs)), "a candle got two predictions"
        step = s.timeframe.ms
        assert as_ofs == list(range(as_ofs[0], as_ofs[-1] + step, step)), "a candle was skipped"
        stream = await bus.since(s, f"{as_ofs[0] - 1}-0")
        assert [p.as_of for p in stream][: len(as_ofs)] == as_ofs  # channel and stream agree
        for p in mine:
            assert p.target_time == p.as_of + step
            assert p.id == f"{p.as_of}-0"
            assert p.model.version in promoted, f"{p.model.version} was never promoted"
            assert p.lower <= p.predicted_close <= p.upper
            model = models[p.model.version]
            window = await store.window(s, p.as_of, model.window + 1)
            ref = model.predict_keras(CandleArrays.from_candles(window, s.timeframe))
            assert p.last_close == window[-1].close
            assert p.predicted_close == pytest.approx(ref.pred_close, rel=1e-6, abs=0)
            assert p.latency_ms >= 0
        # the dashboard's path, stored by the forecaster after a prediction of this run
        stored = await storage.paths.read(s)
        assert stored is not None, f"no forecast path stored for {s}"
        assert as_ofs[0] <= stored.as_of <= as_ofs[-1] and stored.steps == 240
        assert stored.model.version in promoted and stored.points[0].time == stored.as_of + step
    assert not [line for line in forecast.log_lines() if "path.failed" in line]


async def test_killed_forecaster_loses_no_event_and_serves_the_last_good_model(
    redis: Redis, storage: Storage, redis_server: RedisServer, tmp_path: Path
) -> None:
    exchange = await start_replay(SYMBOLS, 1600, tmp_path, speed=60)
    series, added = SERIES
    env = service_env(
        redis_server.url,
        exchange,
        [series.key],
        retrain_every=15,
        stale_after=200,
        CRYPTOCAST_FORECAST__LEASE_TTL_S="2",
    )
    # Ingest stores both series from the start; the forecaster serves the second only once
    # restarted with it in its configuration (a series added to a running deployment).
    ingest = Service("ingest", {**env, "CRYPTOCAST_SERIES": ",".join(SERIES_KEYS)}, tmp_path)
    ingest.start()
    forecast = Service("forecast", env, tmp_path).start()
    bus, registry, leases = storage.predictions, storage.registry, storage.leases
    events = storage.events
    try:

        async def serving_and_training() -> bool:
            return await bus.count(series) >= 5 and await leases.holder(MODEL, "train") is not None

        await wait_for(
            serving_and_training,
            120,
            "predictions flowing while a retrain runs",
            on_fail=forecast.tail,
        )
        good = await registry.current_version(MODEL)
        killed_at = time.monotonic()
        forecast.kill()  # mid-stream and mid-training: the training child dies with it
        published_before = await bus.count(series)

        store = storage.candles
        last_at_kill = await store.last_open_time(series)
        assert last_at_kill is not None

        async def backlog() -> bool:  # candles keep closing while the forecaster is dead
            last = await store.last_open_time(series)
            return last is not None and last >= last_at_kill + 5 * series.timeframe.ms

        await wait_for(backlog, 30, "candles to close while the forecaster is down")
        backlog_end = await store.last_open_time(series)
        assert backlog_end is not None
        restarted_env = {**env, "CRYPTOCAST_SERIES": ",".join(SERIES_KEYS)}
        restarted = Service("forecast", restarted_env, tmp_path).start()
        try:

            async def caught_up() -> bool:
                last = await store.last_open_time(series)
                latest = await bus.latest(series)
                return (
                    latest is not None
                    and last is not None
                    and latest.as_of == last
                    and latest.as_of > backlog_end  # the restarted process did the work
                    and await events.pending_count(series) == 0
                    and await bus.count(added) >= 5
                )

            await wait_for(
                caught_up, 90, "the restarted forecaster to catch up", on_fail=restarted.tail
            )
            assert time.monotonic() - killed_at < 90
        finally:
            assert restarted.terminate() == 0, restarted.tail()
    finally:
        assert ingest.terminate() == 0, ingest.tail()
        await exchange.stop()
        if forecast.proc and forecast.proc.poll() is None:
            forecast.kill()

    predictions = await bus.since(series)
    as_ofs = [p.as_of for p in predictions]
    step = series.timeframe.ms
    # no event lost: every candle from the first prediction on got exactly one prediction,
    # the ones that closed while the forecaster was dead included
    assert as_ofs == list(range(as_ofs[0], as_ofs[-1] + step, step))
    assert len(predictions) > published_before
    # the restarted process served a promoted, intact model: the last good one or a newer one
    after = predictions[published_before:]
    assert after
    versions = await registry.versions(MODEL)
    for v in versions:  # every stored version is complete and verifies: nothing partial
        rec = await registry.get(MODEL, v, with_npz=True)
        assert LoadedModel.from_artifact(rec.artifact, rec.meta)
        assert LoadedModel.from_npz(rec.npz, rec.meta)
    served = {p.model.version for p in after}
    promoted = {
        v for v in versions if _promoted((await registry.get(MODEL, v, with_artifact=False)).meta)
    }
    assert served <= promoted | {good}
    assert "model.refused" not in "\n".join(restarted.log_lines())
    # the added series was served by the global model at once, with no training of its own
    for_added = await bus.since(added)
    assert for_added and {p.model.version for p in for_added} <= set(versions)
    assert await registry.versions(added) == [] and await storage.training_log.state(added) == {}

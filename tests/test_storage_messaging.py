"""Closed-candle events, prediction publishing, leases and the model registry on real Redis."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import orjson
import pytest
from redis.exceptions import ResponseError

from core.lifecycle import with_timeout
from core.schemas import Candle, Prediction
from core.series import SeriesId
from storage.candles import CandleStore
from storage.client import Redis
from storage.events import CandleEvents
from storage.keys import Keys
from storage.leases import Leases
from storage.predictions import PredictionBus
from storage.registry import ModelIntegrityError, ModelRegistry
from tests.factories import make_prediction

S = SeriesId.parse("binance:BTC/USDT:1m")
MIN = 60_000


def prediction(as_of: int, close: float = 100.0) -> Prediction:
    return make_prediction(S, as_of, last_close=close, predicted_return=math.log(1.001))


async def test_pending_events_survive_a_dead_consumer_and_are_claimed(redis: Redis) -> None:
    store, events = CandleStore(redis, Keys()), CandleEvents(redis, Keys())
    await events.ensure_group(S)
    await events.ensure_group(S)  # idempotent
    await store.upsert(S, [Candle(i * MIN, 1, 2, 0.5, 1.5, 1) for i in range(5)], emit_events=True)
    got = await events.read(S, "dies", count=3, block_ms=None)
    assert len(got) == 3
    await events.ack(S, got[0].id)
    assert await events.pending_count(S) == 2
    # the dying consumer's unacknowledged events go to a live one
    claimed = await events.claim(S, "alive", min_idle_ms=0)
    assert [e.id for e in claimed] == [e.id for e in got[1:]]
    assert [e.id for e in await events.read(S, "alive", pending=True)] == [e.id for e in got[1:]]
    rest = await events.read(S, "alive", block_ms=None)
    assert len(rest) == 2
    await events.ack(S, *(e.id for e in claimed + rest))
    assert await events.pending_count(S) == 0


async def test_prediction_published_once_on_channel_stream_and_latest(redis: Redis) -> None:
    bus = PredictionBus(redis, Keys(), stream_len=100)
    received: list[Prediction] = []
    ready = asyncio.Event()

    async def listen() -> None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(bus.keys.predictions(S))
        ready.set()
        async for msg in pubsub.listen():
            if msg["type"] == "message":
                received.append(Prediction.from_json(msg["data"]))
                if len(received) == 2:
                    break
        await pubsub.aclose()

    task = asyncio.create_task(listen())
    await with_timeout(ready.wait(), 5)
    assert await bus.publish(prediction(MIN))
    assert not await bus.publish(prediction(MIN))  # redelivered event: no second message
    assert not await bus.publish(prediction(0))  # older than the last: refused
    assert await bus.publish(prediction(2 * MIN))
    await with_timeout(task, 5)
    assert [p.as_of for p in received] == [MIN, 2 * MIN]
    assert await bus.count(S) == 2
    assert (await bus.latest(S)) == prediction(2 * MIN)
    assert [p.as_of for p in await bus.since(S, f"{MIN}-0")] == [2 * MIN]
    assert [p.as_of for p in await bus.since(S)] == [MIN, 2 * MIN]
    with pytest.raises(ValueError, match="as_of"):
        await bus.publish(prediction(3 * MIN).model_copy(update={"id": "5-0"}))


async def test_subscribe_helper_yields_predictions(redis: Redis) -> None:
    bus = PredictionBus(redis, Keys())
    it = bus.subscribe([S])
    first = asyncio.ensure_future(it.__anext__())
    deadline = asyncio.get_running_loop().time() + 5
    while not (await redis.pubsub_numsub(bus.keys.predictions(S)))[0][1]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await bus.publish(prediction(7 * MIN))
    assert (await with_timeout(first, 5)).as_of == 7 * MIN
    await it.aclose()  # type: ignore[attr-defined]


async def test_leases_are_exclusive_and_only_the_holder_renews_or_releases(redis: Redis) -> None:
    leases = Leases(redis, Keys())
    assert await leases.acquire(S, "serve", "a", 10_000)
    assert not await leases.acquire(S, "serve", "b", 10_000)
    assert await leases.acquire(S, "serve", "a", 10_000)  # re-acquire = renew
    assert not await leases.renew(S, "serve", "b", 10_000)
    assert not await leases.release(S, "serve", "b")
    assert await leases.holder(S, "serve") == "a"
    assert await leases.release(S, "serve", "a")
    assert await leases.acquire(S, "serve", "b", 50)
    deadline = asyncio.get_running_loop().time() + 5
    while await leases.holder(S, "serve") is not None:  # expires by TTL
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert await leases.acquire(S, "serve", "a", 10_000)


# The least a version's metadata holds: what its age is counted from.
TRAINED = {"training_range": {"last_open_time": 0}}


async def test_registry_versions_promotion_and_pruning(redis: Redis) -> None:
    reg = ModelRegistry(redis, Keys())
    assert await reg.current(S) is None
    r1 = await reg.put(S, b"model-one", {**TRAINED, "window": 60})
    r2 = await reg.put(S, b"model-two", {**TRAINED, "window": 60})
    assert r1.version != r2.version and r1.version.startswith("v1-")
    assert await reg.current(S) is None  # stored is not promoted
    await reg.promote(S, r1)
    cur = await reg.current(S)
    assert cur is not None and cur.artifact == b"model-one"
    assert (cur.meta.model_extra or {})["window"] == 60  # a field the schema does not name
    await reg.promote(S, r2)
    assert await reg.current_version(S) == r2.version
    for i in range(5):
        await reg.put(S, f"m{i}".encode(), TRAINED)
    await reg.promote(S, r1)  # an old version can be current: pruning must keep it
    deleted = await reg.prune(S, keep=2)
    assert r1.version not in deleted and r2.version in deleted
    assert len(await reg.versions(S)) == 3
    with pytest.raises(KeyError):
        await reg.get(S, r2.version)


async def test_registry_refuses_corrupted_or_mismatched_artifacts(redis: Redis) -> None:
    reg = ModelRegistry(redis, Keys())
    rec = await reg.put(S, b"good bytes", {**TRAINED, "features": ["ret"]})
    await reg.promote(S, rec)
    key = reg.keys.model_version(S, rec.version)
    await redis.hset(key, "artifact", b"good byteS")  # bit rot
    with pytest.raises(ModelIntegrityError, match="sha256"):
        await reg.current(S)
    await redis.hset(key, mapping={"artifact": b"good bytes", "meta": b'{"sha256":"00"}'})
    with pytest.raises(ModelIntegrityError, match="metadata"):
        await reg.current(S)
    await redis.hset(key, "meta", b"not json")
    with pytest.raises(ModelIntegrityError):
        await reg.current(S)
    # promotion refuses a version whose sha differs from what the trainer computed
    other = await reg.put(S, b"other", TRAINED)
    with pytest.raises(ResponseError, match="sha256 mismatch"):
        await reg.promote(S, replace(other, sha256="0" * 64))
    assert await reg.current_version(S) == rec.version


async def test_publishes_requested_together_are_one_pipeline_each_still_once(
    redis: Redis,
) -> None:
    """Series closing together publish in one round trip (a pipeline of the scripts); each
    script stays atomic: a repeat is refused and its event acknowledged all the same, and a
    script flushed from Redis's cache is loaded and run once."""
    bus, store, events = (
        PredictionBus(redis, Keys(), stream_len=100),
        CandleStore(redis, Keys()),
        CandleEvents(redis, Keys()),
    )
    assert bus.pipelined
    series = [SeriesId.parse(f"binance:S{i}/USDT:1m") for i in range(5)]
    for s in series:
        await events.ensure_group(s)
        await store.upsert(s, [Candle(MIN, 1, 2, 0.5, 1.5, 1)], emit_events=True)
    read = {s: await events.read(s, "c", block_ms=None) for s in series}
    await redis.script_flush()  # the pipeline's EVALSHA meets NOSCRIPT: loaded, run once

    def pred(s: SeriesId, as_of: int) -> Prediction:
        return make_prediction(s, as_of, last_close=100.0, predicted_return=math.log(1.001))

    scores = {"mae": 0.1 / 3, "model": 'v1-"é"', "model_figures": {"n": 3, "mase": None}}
    done = await asyncio.gather(
        *(bus.publish(pred(s, MIN), ack=[read[s][0].id], scores=scores) for s in series),
        bus.publish(pred(series[0], 0)),  # older than the one published with it
    )
    assert done == [True] * 5 + [False]
    stored = await redis.hgetall(bus.keys.live_score(series[0]))
    assert stored == {k.encode(): orjson.dumps(v) for k, v in scores.items()}
    for s in series:
        assert await bus.count(s) == 1
        assert await events.pending_count(s) == 0
    again = await asyncio.gather(*(bus.publish(pred(s, MIN)) for s in series))
    assert again == [False] * 5

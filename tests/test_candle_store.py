"""The candle store against a real redis-server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from core.schemas import Candle
from core.series import SeriesId
from storage.candles import CandleStore, Hole, find_holes
from storage.client import Redis
from storage.events import CandleEvents
from storage.keys import BUCKET_SIZE, Keys
from tests.redis_support import empty_store

S = SeriesId.parse("binance:BTC/USDT:1m")
MIN = 60_000


def candle(i: int, close: float = 100.0) -> Candle:
    return Candle(i * MIN, close, close + 1, close - 1, close, 1.0 + i, i)


async def test_same_candle_twice_is_stored_once(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    cs = [candle(i) for i in range(300)]
    first = await store.upsert(S, cs)
    again = await store.upsert(S, cs)
    assert (first.new, first.replaced, first.unchanged) == (300, 0, 0)
    assert (again.new, again.replaced, again.unchanged) == (0, 0, 300)
    assert await store.count(S) == 300
    assert await store.range(S) == cs


async def test_revised_candle_replaces_the_old_one(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, [candle(i) for i in range(10)])
    revised = replace(candle(4), close=100.5)
    res = await store.upsert(S, [candle(3), revised])
    assert (res.new, res.replaced, res.unchanged) == (0, 1, 1)
    assert await store.get(S, 4 * MIN) == revised
    assert await store.count(S) == 10


async def test_reads_last_window_range_and_open_times(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    cs = [candle(i) for i in range(1000) if i not in (500, 501, 777)]
    await store.upsert(S, list(reversed(cs)))  # order of arrival does not matter
    assert await store.last_open_time(S) == 999 * MIN
    assert await store.first_open_time(S) == 0
    assert await store.last(S, 5) == cs[-5:]
    assert await store.last(S, 2000) == cs
    assert await store.window(S, 502 * MIN, 4) == [candle(499), candle(502)]
    assert await store.range(S, 498 * MIN, 503 * MIN) == [candle(i) for i in (498, 499, 502, 503)]
    assert await store.open_times(S, 770 * MIN, 780 * MIN) == [
        i * MIN for i in range(770, 781) if i != 777
    ]
    assert await store.get(S, 500 * MIN) is None


async def test_holes_are_found_and_reported_as_ranges(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, [candle(i) for i in range(1000) if i not in (500, 501, 777)])
    assert await store.holes(S) == [Hole(500 * MIN, 501 * MIN, 2), Hole(777 * MIN, 777 * MIN, 1)]
    # an explicit range reports missing candles at its edges too
    assert await store.holes(S, 995 * MIN, 1002 * MIN) == [Hole(1000 * MIN, 1002 * MIN, 3)]
    assert await store.holes(SeriesId.parse("binance:ETH/USDT:1m")) == []
    assert await store.record_unfillable(S, [500 * MIN, 501 * MIN]) == 2
    assert await store.record_unfillable(S, [500 * MIN]) == 0
    assert await store.unfillable(S) == [500 * MIN, 501 * MIN]


async def test_retention_caps_each_series_and_keeps_the_newest(redis: Redis) -> None:
    store = CandleStore(redis, Keys(), retention=300)
    other = SeriesId.parse("binance:ETH/USDT:1m")
    await store.upsert(other, [candle(i) for i in range(50)])
    for start in range(0, 1000, 170):  # several batches crossing bucket boundaries
        res = await store.upsert(S, [candle(i) for i in range(start, min(start + 170, 1000))])
        assert res.count <= 300
    assert await store.count(S) == 300
    assert await store.first_open_time(S) == 700 * MIN
    assert await store.range(S) == [candle(i) for i in range(700, 1000)]
    assert await store.count(other) == 50  # another series is untouched
    buckets = await redis.zrange(store.keys.candle_index(S), 0, -1)
    assert min(int(b) for b in buckets) == 700 // BUCKET_SIZE


async def test_events_only_for_new_or_revised_candles(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    events = CandleEvents(redis, Keys())
    await events.ensure_group(S)
    await store.upsert(S, [candle(1), candle(2)], emit_events=True, arrived_ms=123)
    await store.upsert(S, [candle(2)], emit_events=True)  # duplicate: no event
    await store.upsert(S, [replace(candle(2), volume=9.0)], emit_events=True)  # revision
    await store.upsert(S, [candle(3)])  # backfill: no event
    got = await events.read(S, "c1", block_ms=None)
    assert [(e.candle.open_time, e.revised) for e in got] == [
        (MIN, False),
        (2 * MIN, False),
        (2 * MIN, True),
    ]
    assert got[0].arrived_ms == 123 and got[0].candle == candle(1)


async def test_upsert_is_atomic_per_batch_with_its_events(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    res = await store.upsert(S, [candle(i) for i in range(2500)], emit_events=True)
    assert res.new == 2500
    assert await redis.xlen(store.keys.events(S)) == 2500


async def test_memory_encoding_stays_compact(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, [candle(i) for i in range(BUCKET_SIZE * 3)])
    assert await redis.object("encoding", store.keys.candle_bucket(S, 1)) == b"listpack"


def test_find_holes_examples() -> None:
    assert find_holes(S, [0, 1, 2], 0, 2) == []
    assert find_holes(S, [], 0, 2) == [Hole(0, 2 * MIN, 3)]
    assert find_holes(S, [1, 3], 0, 4) == [
        Hole(0, 0, 1),
        Hole(2 * MIN, 2 * MIN, 1),
        Hole(4 * MIN, 4 * MIN, 1),
    ]


@given(st.sets(st.integers(0, 400)), st.integers(0, 200), st.integers(200, 450))
def test_find_holes_property(present: set[int], lo: int, hi: int) -> None:
    holes = find_holes(S, sorted(present), lo, hi)
    missing = {i for h in holes for i in range(h.first // MIN, h.last // MIN + 1)}
    assert missing == set(range(lo, hi + 1)) - present
    assert all(h.count == (h.last - h.first) // MIN + 1 for h in holes)
    assert all(a.last + MIN < b.first for a, b in pairwise(holes))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 600), st.sampled_from([100.0, 101.0, 102.5])), max_size=80
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_sequence_of_upserts_leaves_the_last_value_per_open_time(
    settings: Settings, batches: list[list[tuple[int, float]]]
) -> None:
    """Idempotency and ordering: whatever order and repetition, history = last write per time."""

    async def run() -> None:
        async with empty_store(settings) as store:
            expected: dict[int, Candle] = {}
            for batch in batches:
                cs = [candle(i, close) for i, close in batch]
                await store.upsert(S, cs)
                expected.update({c.open_time: c for c in cs})
            await store.upsert(S, list(expected.values()))  # replaying everything changes nothing
            want = [expected[t] for t in sorted(expected)]
            assert await store.range(S) == want
            assert await store.count(S) == len(want)
            assert await store.last_open_time(S) == (want[-1].open_time if want else None)
            present = [c.open_time // MIN for c in want]
            if want:
                assert await store.holes(S) == find_holes(S, present, present[0], present[-1])

    asyncio.run(run())


async def test_rest_copy_without_trade_count_is_not_a_revision(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, [candle(1)])
    res = await store.upsert(S, [replace(candle(1), trades=None)], emit_events=True)
    assert (res.new, res.replaced, res.unchanged) == (0, 0, 1)
    assert await store.get(S, MIN) == candle(1)  # the trade count is kept
    assert await redis.xlen(store.keys.events(S)) == 0
    res = await store.upsert(S, [replace(candle(1), trades=None, close=100.5)])
    assert res.replaced == 1


async def test_upserts_survive_a_flushed_script_cache(redis: Redis) -> None:
    store = CandleStore(redis, Keys())
    await store.upsert(S, [candle(1)])
    await redis.script_flush()  # what a restarted Redis looks like to a long-lived client
    res = await store.upsert(S, [candle(1), candle(2)], emit_events=True)
    assert (res.new, res.unchanged) == (1, 1)
    assert await redis.xlen(store.keys.events(S)) == 1

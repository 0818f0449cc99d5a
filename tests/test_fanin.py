"""The forecaster's one read for all its series' events (standalone Redis) on a real Redis."""

from __future__ import annotations

from core.lifecycle import with_timeout
from core.schemas import Candle
from core.series import SeriesId
from forecaster.serving.fanin import EventFanIn
from storage.candles import CandleStore
from storage.client import Redis
from storage.events import CandleEvents
from storage.keys import Keys

A, B, C = (SeriesId.parse(f"binance:{s}/USDT:1m") for s in ("AAA", "BBB", "CCC"))
MIN = 60_000


def candle(i: int) -> Candle:
    return Candle(i * MIN, 1, 2, 0.5, 1.5, 1)


async def test_one_read_serves_many_series_and_none_is_stranded_or_stolen(redis: Redis) -> None:
    store, events = CandleStore(redis, Keys()), CandleEvents(redis, Keys())
    for s in (A, B, C):
        await events.ensure_group(s)
    fanin = EventFanIn(events, "me", count=100, block_ms=200)
    qa, qb = await fanin.join(A), await fanin.join(B)

    # Candles of both series closing together come out of one read, each to its series.
    await store.upsert_many([(A, [candle(1)]), (B, [candle(1)])], emit_events=True)
    got_a = await with_timeout(qa.get(), 5)
    got_b = await with_timeout(qb.get(), 5)
    assert [e.candle.open_time for e in got_a] == [MIN] and got_a[0].series == A
    assert [e.candle.open_time for e in got_b] == [MIN] and got_b[0].series == B

    # A read answered but never handed out (what a read cancelled as the set of series changes
    # may leave): the next read finds A's event pending after the last one handed out, once.
    await fanin._stop()  # no read in flight: the one below plays the cancelled one
    await store.upsert(A, [candle(2)], emit_events=True)
    taken = await events.read(A, "me", block_ms=None)
    assert [e.candle.open_time for e in taken] == [2 * MIN]
    qc = await fanin.join(C)
    recovered = await with_timeout(qa.get(), 5)
    assert [e.id for e in recovered] == [taken[0].id]

    # Once A has left, its events are no longer read: they wait for A's next holder.
    await fanin.leave(A)
    await store.upsert_many([(A, [candle(3)]), (C, [candle(3)])], emit_events=True)
    got_c = await with_timeout(qc.get(), 5)  # a read ran after the leave
    assert [e.candle.open_time for e in got_c] == [3 * MIN]
    assert qa.empty() and qb.empty()
    assert await events.pending_count(A) == 2  # candles 1 and 2: handed out, unacknowledged
    assert [e.candle.open_time for e in await events.read(A, "next", block_ms=None)] == [3 * MIN]
    await fanin.close()
    assert fanin.reads >= 3


async def test_a_failed_read_fails_every_joined_series(redis: Redis) -> None:
    """Redis refusing the read (here: no consumer group) reaches each worker as an error,
    which restarts it, instead of silently serving nothing."""
    events = CandleEvents(redis, Keys())
    fanin = EventFanIn(events, "me", count=100, block_ms=200)
    qa, qb = await fanin.join(A), await fanin.join(B)
    got = [await with_timeout(q.get(), 5) for q in (qa, qb)]
    assert all(isinstance(g, Exception) and "NOGROUP" in str(g) for g in got)
    await fanin.close()


async def test_the_candles_of_one_instant_are_handed_out_together(redis: Redis) -> None:
    """A blocked XREADGROUP is answered at the first stream written; the other candles that
    closed at the same instant (one pipeline) come with it, so the workers see them in the same
    loop turn and the batcher runs them as one forward pass."""
    series = [SeriesId.parse(f"binance:S{i}/USDT:1m") for i in range(20)]
    store, events = CandleStore(redis, Keys()), CandleEvents(redis, Keys())
    for s in series:
        await events.ensure_group(s)
    fanin = EventFanIn(events, "me", count=100, block_ms=5_000)
    queues = [await fanin.join(s) for s in series]
    await store.upsert_many([(s, [candle(1)]) for s in series], emit_events=True)
    first = await with_timeout(queues[0].get(), 5)
    # the first queue woke us: every other one was filled by the same hand-out
    assert [q.qsize() for q in queues[1:]] == [1] * (len(series) - 1)
    assert [e.candle.open_time for e in first] == [MIN]
    await fanin.close()

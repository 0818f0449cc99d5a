"""Candles as columns: the vectorised rules are candle_problem's, the packing is the codec's."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.schemas import REJECT_REASONS, Candle, candle_problem
from core.series import SeriesId, Timeframe
from storage.candles import CandleStore
from storage.client import Redis
from storage.codec import pack_record
from storage.columns import OK, CandleColumns, candle_problems, pack_records
from storage.keys import Keys

T0 = 1769904000000  # 2026-02-01 00:00 UTC, on every grid up to 1d
prices = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1.0, 10.0, 1e12, 2e12, 9.99]),
)
times = st.one_of(
    st.integers(-5, 5).map(lambda k: T0 + k * 60_000),
    st.integers(T0 - 10**8, T0 + 10**8),
)


@st.composite
def candles(draw: st.DrawFn) -> tuple[Candle, int | None]:
    t = draw(times)
    o, h, lo, c = (draw(prices) for _ in range(4))
    if draw(st.booleans()):  # mostly well-ordered, so later rules are reached too
        lo, o, c, h = sorted([abs(x) if math.isfinite(x) else 1.0 for x in (o, h, lo, c)])
    v = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)))
    n = draw(st.one_of(st.none(), st.integers(-3, 10**6)))
    close = draw(st.one_of(st.none(), st.integers(t - 2, t + 130_000)))
    return Candle(t, o, h, lo, c, v, n), close


@settings(max_examples=300, deadline=None)
@given(
    batch=st.lists(candles(), min_size=1, max_size=30),
    tf=st.sampled_from(["1s", "1m", "1h", "1d", "1w", "1M"]),
    now=st.one_of(st.none(), st.integers(T0 - 10**6, T0 + 10**7)),
    with_close=st.booleans(),
)
def test_vectorised_rules_are_candle_problem(
    batch: list[tuple[Candle, int | None]], tf: str, now: int | None, with_close: bool
) -> None:
    timeframe = Timeframe(tf)
    cs = [c for c, _ in batch]
    closes = [timeframe.close_time(c.open_time) if t is None else t for c, t in batch]
    codes = candle_problems(
        CandleColumns.from_candles(cs),
        timeframe,
        now,
        np.array(closes, dtype=np.int64) if with_close else None,
    )
    for c, close, code in zip(cs, closes, codes.tolist(), strict=True):
        want = candle_problem(c, timeframe, now, close if with_close else None)
        assert (None if code == OK else REJECT_REASONS[code]) == want, (c, close)


def test_packed_records_are_the_codecs() -> None:
    cs = [
        Candle(T0 + i * 60_000, 1.0 + i, 2.0 + i, 0.5, 1.5, 10.0 * i, i or None) for i in range(5)
    ]
    cols = CandleColumns.from_candles(cs)
    slots, fields = np.array([1, 1, 2, 2, 3]), np.array([5, 6, 0, 1, 127])
    want = b"".join(pack_record(s, f, c) for s, f, c in zip(slots, fields, cs, strict=True))
    assert pack_records(cols, slots, fields) == want
    assert cols.candles() == cs


async def test_columns_and_objects_store_alike(redis: Redis) -> None:
    cs = [Candle(T0 + i * 60_000, 10.0, 11.0, 9.0, 10.5, float(i), i) for i in range(0, 700, 3)]
    a, b = SeriesId.parse("binance:A/USDT:1m"), SeriesId.parse("binance:B/USDT:1m")
    store = CandleStore(redis, Keys())
    ra = await store.upsert(a, cs)
    rb = await store.upsert(b, CandleColumns.from_candles(cs))
    assert (ra.new, ra.count, ra.last_open_time) == (rb.new, rb.count, rb.last_open_time)
    assert await store.range(a) == await store.range(b) == cs
    assert await store.holes(a) == await store.holes(b)
    again = await store.upsert(b, CandleColumns.from_candles([*cs[:3], cs[0]]))
    assert (again.new, again.replaced, again.unchanged) == (0, 0, 4)


async def test_a_candle_twice_in_one_batch_is_judged_in_order(redis: Redis) -> None:
    s = SeriesId.parse("binance:C/USDT:1m")
    store = CandleStore(redis, Keys())
    c = Candle(T0, 10.0, 11.0, 9.0, 10.5, 1.0, 3)
    revised = Candle(T0, 10.0, 11.0, 9.0, 10.6, 2.0, 4)
    res = await store.upsert(s, [c, c])
    assert (res.new, res.replaced, res.unchanged, res.count) == (1, 0, 1, 1)
    res = await store.upsert(s, [Candle(T0 + 60_000, 1.0, 1.0, 1.0, 1.0, 0.0, 0), revised, c])
    assert (res.new, res.replaced, res.unchanged, res.count) == (1, 2, 0, 2)
    assert await store.get(s, T0) == c


async def test_holes_besides_what_was_written_are_the_stores_holes(redis: Redis) -> None:
    s = SeriesId.parse("binance:D/USDT:1m")
    store = CandleStore(redis, Keys())
    earlier = [T0 + i * 60_000 for i in (5, 6, 300)]  # stored before, inside the file's gaps
    await store.upsert(s, [Candle(t, *(10.0, 11.0, 9.0, 10.5, 1.0, 3)) for t in earlier])
    written = [T0 + i * 60_000 for i in range(400) if i not in (5, 6, 7, 200, 300, 301)]
    await store.upsert(s, [Candle(t, *(10.0, 11.0, 9.0, 10.5, 1.0, 3)) for t in written])
    first, last = T0, T0 + 399 * 60_000
    got = await store.holes_besides(s, np.array(written, dtype=np.int64), first, last)
    assert got == await store.holes(s, first, last)
    assert [(h.first - T0) // 60_000 for h in got] == [7, 200, 301]

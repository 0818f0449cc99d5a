"""Fuzzing the ingest path: malformed frames and CSV rows are rejected and counted, never crash,
and no bad candle reaches Redis."""

from __future__ import annotations

import asyncio
import csv
import json
import math
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import IngestSettings
from config.settings import Settings as AppSettings
from core.clock import WallClock
from core.lifecycle import with_timeout
from core.schemas import Candle, candle_problem
from core.series import SeriesId
from ingest.binance_ws import BinanceKlineSource
from ingest.csvfiles import CsvFormatError, read_csv
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys

S = SeriesId.parse("binance:BTC/USDT:1m")
T0 = 1_769_904_000_000  # 2026-02-01 00:00 UTC, a closed minute by the wall clock

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.text(max_size=8),
    st.sampled_from(["NaN", "nan", "inf", "-inf", "1e400", "-1", "0", "", "1e-400", "Infinity"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def kline_frames(draw: st.DrawFn) -> tuple[str, bool]:
    """A frame, and whether it is a well-formed closed kline of BTCUSDT 1m."""
    i = draw(st.integers(0, 500))
    o, c = draw(st.floats(1, 1e5)), draw(st.floats(1, 1e5))
    lo, hi = min(o, c) * 0.99, max(o, c) * 1.01
    k: dict[str, Any] = {
        "t": T0 + i * 60_000,
        "T": T0 + i * 60_000 + 59_999,
        "s": "BTCUSDT",
        "i": "1m",
        "o": repr(o),
        "h": repr(hi),
        "l": repr(lo),
        "c": repr(c),
        "v": repr(draw(st.floats(0, 1e9))),
        "n": draw(st.integers(0, 10**6)),
        "x": True,
        "q": "0",
        "V": "0",
        "Q": "0",
        "B": "0",
    }
    good = True
    for field in draw(st.lists(st.sampled_from(sorted(k)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "garbage"]))
        good = False
        if action == "drop":
            del k[field]
        else:
            k[field] = draw(garbage)
    msg: Any = {"e": "kline", "E": T0, "s": "BTCUSDT", "k": k}
    shape = draw(st.sampled_from(["plain", "combined", "broken", "array", "huge"]))
    if shape == "combined":
        msg = {"stream": "btcusdt@kline_1m", "data": msg}
    text = json.dumps(msg, allow_nan=True)  # NaN/Infinity tokens: invalid JSON, must be refused
    if shape == "broken":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))], False
    if shape == "array":
        return json.dumps([msg], allow_nan=True), False
    if shape == "huge":
        k["o"] = "9" * 400
        return json.dumps(msg, allow_nan=True), False
    return text, good


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(kline_frames(), min_size=1, max_size=40))
def test_fuzzed_frames_never_crash_and_nothing_bad_is_stored(
    settings: AppSettings, frames: list[tuple[str, bool]]
) -> None:
    async def run() -> None:
        redis = await connect(settings)
        try:
            await redis.flushall()
            store = CandleStore(redis, Keys())
            sink = CandleSink(store, WallClock())
            source = BinanceKlineSource([S], "ws://127.0.0.1:1", sink, IngestSettings())
            writer = asyncio.create_task(sink.run())
            for text, _good in frames:
                source._handle(text)  # the exact path of every websocket frame
            await with_timeout(sink.drained(), 10)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            stored = await store.range(S)
            # every frame is accounted for: accepted (stored or unchanged) or rejected with a
            # reason, except in-progress updates and control replies, which are neither
            silent = sum(1 for text, _g in frames if _neither(text))
            rejected = sum(sink.rejects.counts.values())
            assert sink.stored + sink.unchanged + rejected == len(frames) - silent
            assert sum(1 for _t, good in frames if good) <= sink.stored + sink.unchanged
            for c in stored:  # whatever got in is a valid closed candle
                assert candle_problem(c, S.timeframe, WallClock().now_ms()) is None
                assert all(math.isfinite(v) for v in (c.open, c.high, c.low, c.close, c.volume))
        finally:
            await redis.aclose()

    asyncio.run(run())


def _neither(text: str) -> bool:
    """A frame that parses to an in-progress kline or a control reply."""
    from core.schemas import CandleError
    from ingest.binance_format import parse_kline_message

    try:
        update = parse_kline_message(text)
    except CandleError:
        return False
    return update is None or not update.closed


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=12),
                st.floats(allow_nan=True).map(str),
                st.integers(-(10**20), 10**20).map(str),
            ),
            min_size=0,
            max_size=14,
        ),
        max_size=30,
    ),
    header=st.booleans(),
)
def test_fuzzed_csv_never_crashes_and_rejects_are_counted(
    tmp_path_factory: Any, rows: list[list[str]], header: bool
) -> None:
    path: Path = tmp_path_factory.mktemp("csv") / "fuzz.csv"
    good = "1769904000000,10.1,10.2,10.0,10.15,100,1769904059999,1000,5,50,500,0"
    head = (
        (
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore\n"
        )
        if header
        else ""
    )
    body = good + "\n" + "\n".join(",".join(r) for r in rows)
    path.write_text(head + body + "\n")
    try:
        result = read_csv(path, timeframe="1m")
    except CsvFormatError:
        return  # an unrecognisable file is refused with a clear error: fine
    for c in result.candles:
        assert candle_problem(c, S.timeframe) is None
    # no record silently dropped: every non-blank CSV record is a candle or a counted reject
    with path.open(newline="") as f:
        records = [r for r in csv.reader(f) if r]  # only truly empty lines are not records
    assert len(result.rows) + len(result.rejects) == len(records) - (1 if header else 0)
    assert sum(result.reject_counts.values()) == len(result.rejects)


def test_all_good_frames_are_stored_exactly() -> None:
    """Sanity for the generator: a well-formed frame parses to the candle it describes."""
    from ingest.binance_format import parse_kline_message

    raw = orjson.dumps(
        {
            "e": "kline",
            "E": T0,
            "s": "BTCUSDT",
            "k": {
                "t": T0,
                "T": T0 + 59_999,
                "s": "BTCUSDT",
                "i": "1m",
                "o": "10",
                "h": "11",
                "l": "9",
                "c": "10.5",
                "v": "3",
                "n": 7,
                "x": True,
            },
        }
    )
    update = parse_kline_message(raw)
    assert update is not None and update.closed
    assert update.candle == Candle(T0, 10.0, 11.0, 9.0, 10.5, 3.0, 7)

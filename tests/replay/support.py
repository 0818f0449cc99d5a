"""Helpers of the replay exchange tests: slices of real candles, a running exchange, clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from core.lifecycle import with_timeout
from ingest.csvfiles import CsvRow, read_csv
from replay import (
    ReplayConfig,
    ReplayExchange,
    ReplaySource,
)
from tests.market_data import market_file

ROWS = 1100  # 1000 candles of history before the default start, 100 to stream


def slice_csv(tmp_path: Path, name: str, rows: int = ROWS) -> Path:
    out = tmp_path / name
    with market_file(name).open() as src:
        out.write_text("".join(next(src) for _ in range(rows + 1)))
    return out


@asynccontextmanager
async def replay(*csvs: Path, **kw: Any) -> AsyncIterator[ReplayExchange]:
    kw.setdefault("speed", 600.0)
    kw.setdefault("exchange_info_symbols", "replayed")
    ex = ReplayExchange(ReplayConfig([ReplaySource(p) for p in csvs], **kw))
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def ws_client(url: str) -> connect:
    # Unbounded client queue: a test that stops reading must not stall the close handshake
    # behind messages websockets refuses to buffer (it would wait close_timeout, 10 s).
    return connect(url, max_queue=None)


def csv_rows(path: Path) -> dict[int, CsvRow]:
    return {r.candle.open_time: r for r in read_csv(path).rows if r.candle}


async def recv(ws: ClientConnection, wait: float = 5.0) -> Any:
    return orjson.loads(await with_timeout(ws.recv(), wait))


async def until(cond: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        res = cond()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def assert_final_matches(k: dict[str, Any], row: CsvRow) -> None:
    c = row.candle
    assert c is not None
    assert k["x"] is True and k["t"] == c.open_time and k["T"] == row.close_time
    for key, value in (("o", c.open), ("h", c.high), ("l", c.low), ("c", c.close)):
        assert isinstance(k[key], str) and float(k[key]) == value
    assert float(k["v"]) == c.volume and k["n"] == c.trades
    assert float(k["q"]) == row.quote_volume and float(k["V"]) == row.taker_buy_volume
    assert float(k["Q"]) == row.taker_buy_quote_volume
    assert k["L"] - k["f"] + 1 == c.trades

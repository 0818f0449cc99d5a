"""A 10 MB websocket frame: the Binance source refuses it (close 1009), reconnects, and goes on
storing the good klines; nothing crashes and nothing from the huge frame is stored."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve

from config.settings import IngestSettings
from core.clock import WallClock
from core.series import SeriesId
from ingest.binance_ws import BinanceKlineSource
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.client import Redis
from storage.keys import Keys
from tests.e2e_support import wait_for

S = SeriesId.parse("binance:BTC/USDT:1m")
T0 = 1_769_904_000_000


def kline(i: int) -> bytes:
    return orjson.dumps(
        {
            "stream": "btcusdt@kline_1m",
            "data": {
                "e": "kline",
                "E": T0,
                "s": "BTCUSDT",
                "k": {
                    "t": T0 + i * 60_000,
                    "T": T0 + i * 60_000 + 59_999,
                    "s": "BTCUSDT",
                    "i": "1m",
                    "o": "100",
                    "h": "101",
                    "l": "99",
                    "c": "100.5",
                    "v": "3",
                    "n": 7,
                    "x": True,
                },
            },
        }
    )


async def test_ten_megabyte_frame_is_refused_and_ingest_goes_on(redis: Redis) -> None:
    connections = 0
    too_big = ("cryptocast_ws_reconnects_total", {"exchange": "binance", "reason": "frame_too_big"})
    before = REGISTRY.get_sample_value(*too_big) or 0.0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.send(kline(0))
            await ws.send(b"{" + b" " * (10 << 20) + b"}")  # 10 MB of nothing
            await ws.send(kline(1))  # never read on this connection: it is closed
        else:
            for i in range(1, 4):
                await ws.send(kline(i))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        store = CandleStore(redis, Keys())
        sink = CandleSink(store, WallClock())
        settings = IngestSettings(
            max_frame_bytes=1 << 20, reconnect_min_s=0.05, reconnect_max_s=0.2
        )
        source = BinanceKlineSource([S], f"ws://127.0.0.1:{port}", sink, settings)
        tasks = [asyncio.create_task(sink.run()), asyncio.create_task(source.run())]
        try:

            async def all_stored() -> bool:
                return await store.count(S) == 4

            await wait_for(all_stored, 20, "the good klines of both connections")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    assert source.stats.reconnects >= 1  # the huge frame ended the first connection
    assert (REGISTRY.get_sample_value(*too_big) or 0.0) - before >= 1  # and was counted so
    assert [c.open_time for c in await store.range(S)] == [T0 + i * 60_000 for i in range(4)]

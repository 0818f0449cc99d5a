"""Ingest: websocket path throughput (receive, parse, validate, store), 1, 10, 100, 1,000 symbols.

A local websocket server (the ``websockets`` library on loopback) sends pre-built Binance kline
frames of closed candles (combined-stream format, real LINKUSDT 1m prices relabelled as N
synthetic symbols) as fast as the connection takes them, to the real
:class:`~ingest.binance_ws.BinanceKlineSource` with its :class:`~ingest.sink.CandleSink` and
:class:`~storage.candles.CandleStore` on a private redis-server: the figure is messages per
second from the first frame sent to the last candle stored (with its closed-candle event).

Baselines in the same run: the same frames read by a naive consumer (``json.loads`` and one
upsert round trip per candle, as an ingester without batching would), and the parser alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve

from bench.common import binance_1m_candles, emit, private_redis
from config.settings import IngestSettings, load_settings
from core.clock import WallClock
from core.lifecycle import cancel_all
from core.schemas import Candle
from core.series import SeriesId
from ingest.binance_format import parse_kline_message, stream_name
from ingest.binance_ws import BinanceKlineSource
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys

MESSAGES = 60_000
BASELINE_MESSAGES = 3_000
SYMBOL_COUNTS = (1, 10, 100, 1000)


def _symbols(n: int) -> list[str]:
    return ["LINKUSDT"] if n == 1 else [f"S{i:04d}USDT" for i in range(n)]


def build_frames(candles: list[Candle], symbols: list[str], total: int) -> list[bytes]:
    """``total`` closed-kline frames, round robin over ``symbols``, each symbol walking forward
    through the real candles (so every frame is a distinct candle)."""
    frames = []
    span = candles[-1].open_time - candles[0].open_time + 60_000
    for i in range(total):
        sym = symbols[i % len(symbols)]
        lap, j = divmod(i // len(symbols), len(candles))
        c = replace(candles[j], open_time=candles[j].open_time + lap * span)
        data = {
            "e": "kline",
            "E": c.open_time + 60_000,
            "s": sym,
            "k": {
                "t": c.open_time, "T": c.open_time + 59_999, "s": sym, "i": "1m",
                "f": 1, "L": 2, "o": f"{c.open:.8f}", "c": f"{c.close:.8f}",
                "h": f"{c.high:.8f}", "l": f"{c.low:.8f}", "v": f"{c.volume:.8f}",
                "n": c.trades or 0, "x": True, "q": "0", "V": "0", "Q": "0", "B": "0",
            },
        }  # fmt: skip
        frames.append(orjson.dumps({"stream": stream_name(sym, "1m"), "data": data}))
    return frames


class Sender:
    """A websocket server that sends each client the ``frames`` of the streams its URL names
    (all of them when it names none), as fast as the client reads them."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = [(orjson.loads(f)["stream"], f.decode()) for f in frames]
        self.started = 0.0

    async def handler(self, ws: ServerConnection) -> None:
        if not self.started:
            self.started = time.perf_counter()
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        wanted = set(query["streams"][0].split("/")) if "streams" in query else None
        for stream, f in self.frames:
            if wanted is None or stream in wanted:
                await ws.send(f)
        await ws.wait_closed()


async def measure_source(url: str, redis: Any, n_symbols: int, frames: list[bytes]) -> float:
    """Messages/s through BinanceKlineSource → CandleSink → CandleStore."""
    await redis.flushall()
    store = CandleStore(redis, Keys(), retention=1_000_000, event_stream_len=1_000_000)
    sink = CandleSink(store, WallClock())
    series = [SeriesId.parse(f"binance:{s[:-4]}/USDT:1m") for s in _symbols(n_symbols)]
    sender = Sender(frames)
    async with serve(sender.handler, "127.0.0.1", 0, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        # the default 200 streams per connection: 1,000 symbols are five connections (a URL
        # naming 1,000 streams is longer than a websocket server takes: HTTP 414)
        settings = IngestSettings(reconnect_max_s=1.0)
        source = BinanceKlineSource(
            series, f"ws://127.0.0.1:{port}", sink, settings, expected_interval_s=60.0
        )
        tasks = [asyncio.create_task(sink.run()), asyncio.create_task(source.run())]
        t0 = time.perf_counter()
        try:
            while sink.stored < len(frames):
                await asyncio.sleep(0.005)
                if time.perf_counter() - (sender.started or t0) > 60:
                    raise RuntimeError(f"only {sink.stored} of {len(frames)} stored in 60 s")
            elapsed = time.perf_counter() - sender.started
        finally:
            await cancel_all(*tasks)
    assert sink.rejects.by_reason() == {}, sink.rejects.by_reason()
    assert source.stats.closed_candles == len(frames)
    return len(frames) / elapsed


async def measure_naive(url: str, redis: Any, frames: list[bytes]) -> float:
    """Messages/s of the naive consumer: json.loads, then one upsert round trip per candle."""
    from websockets.asyncio.client import connect as ws_connect

    await redis.flushall()
    store = CandleStore(redis, Keys(), retention=1_000_000, event_stream_len=1_000_000)
    sender = Sender(frames)
    series = {s: SeriesId.parse(f"binance:{s[:-4]}/USDT:1m") for s in _symbols(100)}
    async with serve(sender.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/stream") as ws:
            for _ in range(len(frames)):
                k = json.loads(await ws.recv())["data"]["k"]
                c = Candle(
                    int(k["t"]), float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]),
                    float(k["v"]), int(k["n"]),
                )  # fmt: skip
                await store.upsert(series[k["s"]], [c], emit_events=True, arrived_ms=0)
            elapsed = time.perf_counter() - sender.started
    return len(frames) / elapsed


def measure_parse(frames: list[bytes]) -> float:
    t0 = time.perf_counter()
    for f in frames:
        parse_kline_message(f)
    return len(frames) / (time.perf_counter() - t0)


async def measure(url: str) -> dict[str, Any]:
    redis = await connect(load_settings(redis_url=url))
    candles = binance_1m_candles("linkusdt_binance_futures_1m_2026-02.csv")
    figures: dict[str, Any] = {"messages": MESSAGES}
    try:
        for n in SYMBOL_COUNTS:
            frames = build_frames(candles, _symbols(n), MESSAGES)
            rate = await measure_source(url, redis, n, frames)
            figures[f"ws_path_msgs_per_s_{n}_symbols"] = round(rate)
        frames = build_frames(candles, _symbols(100), MESSAGES)
        figures["parse_only_msgs_per_s"] = round(measure_parse(frames))
        naive = await measure_naive(url, redis, frames[:BASELINE_MESSAGES])
        figures["baseline_naive_json_one_upsert_per_msg_msgs_per_s"] = round(naive)
    finally:
        await redis.aclose()
    figures["speedup_vs_baseline"] = round(figures["ws_path_msgs_per_s_100_symbols"] / naive, 1)
    return figures


def main() -> dict[str, object]:
    with private_redis() as server:
        figures = asyncio.run(measure(server.url))
    # A Binance connection carries at most ~1,024 streams x one update per 2 s ≈ 500 msgs/s.
    figures["target_msgs_per_s"] = 5_000
    figures["ok"] = all(figures[f"ws_path_msgs_per_s_{n}_symbols"] >= 5_000 for n in SYMBOL_COUNTS)
    return emit("ingest", figures)


if __name__ == "__main__":
    main()

"""Storage: batch upsert throughput vs one command per candle, and Redis bytes per candle.

Real candles: the four one-month 1m Binance dumps (161,280 candles, four series). The baseline in
the same run stores candles one per call (one round trip each), as a naive ingester would.
Memory: ``used_memory`` growth over 100,000 stored candles of one series, beside the sum of
``MEMORY USAGE`` of its keys.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from bench.common import binance_1m_candles, emit, private_redis
from config.settings import load_settings
from core.series import SeriesId
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys

FILES = {
    "binanceusdm:AVAX/USDT:USDT:1m": "avaxusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:LINK/USDT:USDT:1m": "linkusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:LTC/USDT:USDT:1m": "ltcusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:NEAR/USDT:USDT:1m": "nearusdt_binance_futures_1m_2026-02.csv",
}
BASELINE_CANDLES = 5_000
MEMORY_CANDLES = 100_000


async def measure(url: str) -> dict[str, float]:
    redis = await connect(load_settings(redis_url=url))
    store = CandleStore(redis, Keys(), retention=1_000_000)
    data = {SeriesId.parse(s): binance_1m_candles(f) for s, f in FILES.items()}
    total = sum(len(c) for c in data.values())

    await redis.flushall()
    t0 = time.perf_counter()
    for series, candles in data.items():
        await store.upsert(series, candles)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for series, candles in data.items():  # the same again: idempotent, nothing changes
        res = await store.upsert(series, candles)
        assert res.new == 0 and res.unchanged == len(candles)
    rerun_s = time.perf_counter() - t0

    await redis.flushall()
    series, candles = next(iter(data.items()))
    t0 = time.perf_counter()
    for c in candles[:BASELINE_CANDLES]:
        await store.upsert(series, [c])
    single_s = time.perf_counter() - t0

    # memory over 100,000 candles of one series (the month of LINK repeated on later dates)
    await redis.flushall()
    base = (await redis.info("memory"))["used_memory"]
    link = data[SeriesId.parse("binanceusdm:LINK/USDT:USDT:1m")]
    span = link[-1].open_time - link[0].open_time + 60_000
    many = [replace(c, open_time=c.open_time + k * span) for k in range(3) for c in link]
    many = many[:MEMORY_CANDLES]
    mem_series = SeriesId.parse("binanceusdm:LINK/USDT:USDT:1m")
    await store.upsert(mem_series, many)
    used = (await redis.info("memory"))["used_memory"] - base
    keys = [k async for k in redis.scan_iter(match="*")]
    usage = sum([await redis.memory_usage(k, samples=0) or 0 for k in keys])
    await redis.aclose()
    return {
        "candles": total,
        "batch_candles_per_s": round(total / batch_s),
        "idempotent_rerun_candles_per_s": round(total / rerun_s),
        "baseline_one_per_call_candles_per_s": round(BASELINE_CANDLES / single_s),
        "speedup_vs_baseline": round((total / batch_s) / (BASELINE_CANDLES / single_s), 1),
        "memory_candles": len(many),
        "used_memory_bytes_per_candle": round(used / len(many), 1),
        "memory_usage_bytes_per_candle": round(usage / len(many), 1),
        "target_batch_candles_per_s": 100_000,
        "target_speedup": 10,
        "target_bytes_per_candle": 150,
    }


def main() -> dict[str, object]:
    with private_redis() as server:
        figures = asyncio.run(measure(server.url))
    figures["ok"] = (
        figures["batch_candles_per_s"] >= 100_000
        and figures["speedup_vs_baseline"] >= 10
        and figures["used_memory_bytes_per_candle"] <= 150
    )
    return emit("storage", figures)


if __name__ == "__main__":
    main()

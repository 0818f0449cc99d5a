"""Backfill: candles/s of ``cryptocast backfill --source csv`` beside redis-benchmark's ceiling.

The figure is the real backfill path (:func:`ingest.backfill.backfill_csv`: read the CSV,
validate every row, upsert in batches through the Lua script) over the four one-month 1m Binance
dumps (161,280 real candles) into an empty private redis-server; beside it, its store step alone
(the same candles parsed beforehand), the part the ceiling below bounds.

The ceiling is ``redis-benchmark`` against the same redis-server in the same run, for the
commands a stored candle costs: the upsert script does one ``HGET`` and one ``HSET`` per candle
on bucket hashes of 128 candles. Two forms:

- ``EVAL`` of a script doing exactly that for 1,000 candles (48-byte values, 8 fresh buckets per
  call): what Redis itself can do with our data layout, whatever the client;
- pipelined ``HSET`` one candle per command (pipeline of 1,000): the ceiling of a client that
  sent candles as commands instead of one script call per 1,000.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import time
from typing import Any

from bench.common import data_file, emit, emit_progress, private_redis
from config.settings import load_settings
from ingest.backfill import BackfillReport, backfill_csv, store_candles
from ingest.csvfiles import read_csv
from storage.candles import CandleStore
from storage.client import connect
from storage.clock import WallClock
from storage.keys import BUCKET_SIZE
from storage.series import SeriesId

FILES = {
    "binanceusdm:AVAX/USDT:USDT:1m": "avaxusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:LINK/USDT:USDT:1m": "linkusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:LTC/USDT:USDT:1m": "ltcusdt_binance_futures_1m_2026-02.csv",
    "binanceusdm:NEAR/USDT:USDT:1m": "nearusdt_binance_futures_1m_2026-02.csv",
}
PER_CALL = 1_000
BUCKETS = -(-PER_CALL // BUCKET_SIZE)
CEILING_SCRIPT = (
    f"for i = 0, {PER_CALL - 1} do "
    f"local k = KEYS[1 + math.floor(i / {BUCKET_SIZE})] local f = i % {BUCKET_SIZE} "
    "if redis.call('HGET', k, f) ~= ARGV[1] then redis.call('HSET', k, f, ARGV[1]) end "
    f"end return {PER_CALL}"
)
VALUE = "x" * 48  # a packed candle is 48 bytes
TARGET = 200_000  # candles/s of the whole backfill (read, validate, store) ...
TARGET_SHARE = 0.70  # ... and its share of the same run's EVAL ceiling


async def measure_backfill(url: str) -> dict[str, Any]:
    redis = await connect(load_settings(redis_url=url))
    await redis.flushall()
    store = CandleStore(redis, retention=1_000_000)
    stored = 0
    t0 = time.perf_counter()
    for key, name in FILES.items():
        report = await backfill_csv(store, SeriesId.parse(key), data_file(name), WallClock())
        assert not report.rejected and not report.holes, report.to_dict()
        stored += report.stored
    seconds = time.perf_counter() - t0
    # the store step alone (what the ceiling compares to): the same candles, parsed beforehand
    await redis.flushall()
    parsed = {k: read_csv(data_file(f)).columns for k, f in FILES.items()}
    t0 = time.perf_counter()
    for key, candles in parsed.items():
        await store_candles(store, SeriesId.parse(key), candles, BackfillReport(key, "csv"))
    store_s = time.perf_counter() - t0
    await redis.flushall()
    await redis.aclose()
    return {
        "candles": stored,
        "seconds": round(seconds, 2),
        "candles_per_s": round(stored / seconds),
        "store_step_candles_per_s": round(stored / store_s),
    }


def redis_benchmark(port: int, requests: int, pipeline: int, *command: str) -> float:
    """Requests/s that redis-benchmark reports for ``command`` (one connection)."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark is not installed (it ships with redis-server)")
    out = subprocess.run(
        [exe, "-p", str(port), "-c", "1", "-n", str(requests), "-P", str(pipeline), "-r",
         "100000000", "--csv", *command],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    return float(rows[-1][1])


def main() -> dict[str, Any]:
    with private_redis() as server:
        figures = asyncio.run(measure_backfill(server.url))
        keys = [f"bench:b:__rand_int__:{i}" for i in range(BUCKETS)]
        eval_calls = redis_benchmark(
            server.port, 400, 1, "EVAL", CEILING_SCRIPT, str(BUCKETS), *keys, VALUE
        )
        hset = redis_benchmark(
            server.port, 400_000, PER_CALL, "HSET", "bench:h:__rand_int__", "__rand_int__", VALUE
        )
    figures["redis_benchmark_eval_hget_hset_candles_per_s"] = round(eval_calls * PER_CALL)
    figures["redis_benchmark_pipelined_hset_candles_per_s"] = round(hset)
    figures["store_step_share_of_eval_ceiling"] = round(
        figures["store_step_candles_per_s"]
        / figures["redis_benchmark_eval_hget_hset_candles_per_s"],
        2,
    )
    figures["share_of_eval_ceiling"] = round(
        figures["candles_per_s"] / figures["redis_benchmark_eval_hget_hset_candles_per_s"], 2
    )
    figures["target_candles_per_s"] = TARGET
    figures["target_share_of_ceiling"] = TARGET_SHARE
    figures["ok"] = (
        figures["candles_per_s"] >= TARGET and figures["share_of_eval_ceiling"] >= TARGET_SHARE
    )
    emit_progress(f"backfill: {figures}")
    return emit("backfill", figures)


if __name__ == "__main__":
    main()

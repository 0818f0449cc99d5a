"""End-to-end latency: candle stored by ingest → prediction received by a subscriber.

A real ``cryptocast forecast`` process serves N series with the seed architecture (LSTM 50 ×2,
window 60). Each round, every series gets its next real candle at the same instant (one Lua
upsert per series, as the ingest sink writes it, with its closed-candle event); a subscriber in
this process timestamps each prediction's arrival. Scenarios: idle, and during a concurrent
retrain (a real ``forecaster.train_job`` process training the default model on a month of 1m
candles), each with the fast numpy path and with the baseline in the same run: the same
pipeline calling Keras ``model.predict`` per candle.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import binance_1m_candles, emit, private_redis
from config.settings import ModelSettings, load_settings
from storage.candles import CandleStore
from storage.client import connect
from storage.keys import Keys
from storage.predictions import PredictionBus
from storage.registry import ModelRegistry
from storage.schemas import Candle
from storage.series import SeriesId

HISTORY = 3000
ROUNDS = {"numpy": 40, "keras": 8}
SERIES_COUNTS = (1, 10)
ONLY = os.environ.get("LATENCY_ONLY")  # e.g. "10_series_numpy" while tuning


def series_names(n: int) -> list[SeriesId]:
    return [SeriesId.parse(f"binance:S{i:03d}/USDT:1m") for i in range(n)]


async def prepare(url: str, candles: list[Candle], n: int) -> None:
    """History and one promoted default-architecture model per series."""
    from forecaster.data import CandleArrays
    from forecaster.training import train

    redis = await connect(load_settings(redis_url=url))
    await redis.flushall()
    store, registry = CandleStore(redis), ModelRegistry(redis)
    settings = ModelSettings(epochs=1, train_candles=HISTORY)
    result = train(
        CandleArrays.from_candles(candles[:HISTORY], series_names(1)[0].timeframe), settings
    )
    meta = {**result.meta, "trained_at": int(time.time() * 1000)}
    for s in series_names(n):
        await store.upsert(s, candles[:HISTORY])
        await registry.promote(s, await registry.put(s, result.artifact, meta))
    await redis.aclose()


def forecaster_env(url: str, n: int, inference: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOCAST_")}
    env.update(
        {
            "CRYPTOCAST_REDIS_URL": url,
            "CRYPTOCAST_SERIES": ",".join(s.key for s in series_names(n)),
            "CRYPTOCAST_SCHEDULE__RETRAIN_EVERY": "100000000",
            "CRYPTOCAST_SCHEDULE__MAX_MODEL_AGE": "100000000",
            "CRYPTOCAST_SCHEDULE__STALE_AFTER": "100000000",
            "CRYPTOCAST_FORECAST__INFERENCE": inference,
            "CRYPTOCAST_LOG_FORMAT": "json",
            "CRYPTOCAST_LOG_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
    )
    return env


async def measure(
    url: str,
    candles: list[Candle],
    n: int,
    inference: str,
    retrain: bool,
    start_index: int,
    tmp_dir: Path,
) -> tuple[dict[str, Any], int]:
    series = series_names(n)
    redis = await connect(load_settings(redis_url=url))
    store, bus = CandleStore(redis), PredictionBus(redis)
    logs = tmp_dir / f"forecast-{n}-{inference}-{retrain}.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cryptocast",
        "forecast",
        env=forecaster_env(url, n, inference),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=logs.open("wb"),
    )
    trainer: asyncio.subprocess.Process | None = None
    received: dict[tuple[str, int], float] = {}
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(Keys().predictions(s) for s in series))

    async def listen() -> None:
        async for msg in pubsub.listen():
            if msg["type"] == "message":
                t = time.time()
                raw = msg["channel"].decode()
                as_of = int(msg["data"].split(b'"as_of":', 1)[1].split(b",", 1)[0])
                received[(raw, as_of)] = t

    listener = asyncio.create_task(listen())
    index = start_index
    latencies: list[float] = []

    async def round_trip(record: bool) -> None:
        nonlocal index
        c = candles[index]
        index += 1
        sent = time.time()
        # all series' candles close at the same instant: one write, as the ingest sink does
        await store.upsert_many(
            [(s, [c]) for s in series], emit_events=True, arrived_ms=int(sent * 1000)
        )
        keys = [(Keys().predictions(s), c.open_time) for s in series]
        deadline = time.monotonic() + 60
        while not all(k in received for k in keys):
            if time.monotonic() > deadline or proc.returncode is not None:
                tail = logs.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"predictions did not arrive:\n{tail}")
            await asyncio.sleep(0.0005)
        if record:
            latencies.extend((received[k] - sent) * 1000 for k in keys)

    try:
        await round_trip(record=False)  # warm-up: leases taken, models loaded
        await round_trip(record=False)
        if retrain:
            trainer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "forecaster.train_job",
                "--series",
                series[0].key,
                "--cold",
                env={
                    **forecaster_env(url, n, inference),
                    "CRYPTOCAST_MODEL__TRAIN_CANDLES": "40000",
                    "CRYPTOCAST_MODEL__EPOCHS": "50",
                },
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(8)  # past TensorFlow's import: into the training epochs
        for _ in range(ROUNDS[inference]):
            await round_trip(record=True)
            if trainer is not None and trainer.returncode is not None:
                raise RuntimeError("the concurrent training ended before the measurement")
            await asyncio.sleep(0.02)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await pubsub.aclose()
        for p in (trainer, proc):
            if p is not None and p.returncode is None:
                p.terminate()
                await asyncio.wait_for(p.wait(), 30)
        await bus.redis.aclose()
    latencies.sort()
    figures = {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "max_ms": round(latencies[-1], 2),
        "n": len(latencies),
    }
    return figures, index


async def run_all(url: str, tmp_dir: Path) -> dict[str, Any]:
    link = binance_1m_candles("linkusdt_binance_futures_1m_2026-02.csv")
    out: dict[str, Any] = {}
    for n in SERIES_COUNTS:
        await prepare(url, link, n)
        index = HISTORY
        for inference in ("numpy", "keras"):
            for retrain in (False, True):
                name = f"{n}_series_{inference}_{'retrain' if retrain else 'idle'}"
                if ONLY and not name.startswith(ONLY):
                    continue
                out[name], index = await measure(url, link, n, inference, retrain, index, tmp_dir)
                print(f"# latency {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def main() -> dict[str, Any]:
    with private_redis() as server, tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(run_all(server.url, Path(tmp)))
    if ONLY:
        return emit("latency_partial", figures)
    ten = figures["10_series_numpy_retrain"]
    base = figures["10_series_keras_retrain"]
    figures["speedup_p99_vs_model_predict_10_series_retrain"] = round(
        base["p99_ms"] / ten["p99_ms"], 1
    )
    figures["target_p99_ms_10_series_retrain"] = 10
    figures["ok"] = ten["p99_ms"] <= 10 and base["p99_ms"] >= 10 * ten["p99_ms"]
    return emit("latency", figures)


if __name__ == "__main__":
    main()

"""Two forecaster replicas sharing the work through the consumer group, 10 and 100 series.

The same pipeline as :mod:`bench.latency_bench` (numpy path, the default global model), scaled
out as an operator does it: replica ``a`` serves every series, then ``b`` joins and the two split
the serve leases (half each); the split is checked before anything is measured. Figures: latency
idle and during a retrain, each replica's resident memory, and every prediction exactly once. The
baseline in the same run is one replica serving the same series (``bench.latency_bench``'s
figures, or measured here when run alone).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, binance_1m_candles, emit, emit_progress, private_redis, run_id
from bench.pipeline import HISTORY, Pipeline, prepare

SERIES_COUNTS = (10, 100)
ROUNDS = {10: 30, 100: 10}
LEASE_TTL_S = "3"  # so the split settles in seconds (a replica rebalances every TTL / 3)
SPLIT_TIMEOUT_S = 240.0


async def scenario(url: str, candles: list[Any], n: int, logs: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Pipeline(url, candles, n, "numpy", HISTORY, logs) as pipe:
        await pipe.start_replica("a", CRYPTOCAST_FORECAST__LEASE_TTL_S=LEASE_TTL_S)
        await pipe.warm_up()
        await pipe.start_replica("b", CRYPTOCAST_FORECAST__LEASE_TTL_S=LEASE_TTL_S)
        t0 = time.perf_counter()
        while (held := await pipe.holders()) != {"a": n // 2, "b": n - n // 2} and held != {
            "a": n - n // 2,
            "b": n // 2,
        }:
            if time.perf_counter() - t0 > SPLIT_TIMEOUT_S:
                raise RuntimeError(f"the replicas did not split the series: {held}")
            await asyncio.sleep(0.2)
        out["split_s"] = round(time.perf_counter() - t0, 1)
        out["held"] = held
        await pipe.warm_up()  # b's models loaded: its first predictions arrived
        if await pipe.holders() != held:
            raise RuntimeError("the leases moved again after the split")
        out["rss_mb"] = pipe.rss()
        out["idle"] = await pipe.measure(ROUNDS[n], f"{n} series 2 replicas idle")
        await pipe.start_retrain()
        out["retrain"] = await pipe.measure(ROUNDS[n], f"{n} series 2 replicas retrain")
        await pipe.stop_retrain()
        out["log_warnings"] = pipe.warnings()
        out["exactly_once"] = await exactly_once(pipe)
    return out


async def exactly_once(pipe: Pipeline) -> bool:
    """Every candle written got exactly one prediction in every series' stream."""
    expected = [c.open_time for c in pipe.candles[HISTORY : pipe.index]]
    for s in pipe.series:
        entries = await pipe.redis.xrange(pipe.keys.predictions(s), "-", "+")
        ids = [int(i.split(b"-")[0]) for i, _f in entries]
        if ids != expected:
            return False
    return True


def one_replica_baseline(n: int) -> dict[str, Any] | None:
    """The single-replica figures of ``bench.latency_bench`` from this run's results."""
    import orjson

    if run_id() is None or not RESULTS.exists():
        return None
    latency = orjson.loads(RESULTS.read_bytes()).get("latency", {})
    fig = latency.get(f"{n}_series_global") if latency.get("run") == run_id() else None
    return None if fig is None else {k: fig[k] for k in ("idle", "retrain", "rss_mb")}


async def run_all(url: str, logs: Path) -> dict[str, Any]:
    link = binance_1m_candles("linkusdt_binance_futures_1m_2026-02.csv")
    out: dict[str, Any] = {}
    for n in SERIES_COUNTS:
        await prepare(url, link, n)
        out[f"{n}_series_2_replicas"] = await scenario(url, link, n, logs)
        emit_progress(f"replicas {n}: {out[f'{n}_series_2_replicas']}")
        baseline = one_replica_baseline(n)
        if baseline is None:  # run alone: measure the baseline here
            await prepare(url, link, n)
            async with Pipeline(url, link, n, "numpy", HISTORY, logs) as pipe:
                await pipe.start_replica("a")
                await pipe.warm_up()
                baseline = {
                    "rss_mb": pipe.rss()["a"],
                    "idle": await pipe.measure(ROUNDS[n], f"{n} series 1 replica idle"),
                }
        out[f"{n}_series_1_replica_baseline"] = baseline
    return out


def main() -> dict[str, Any]:
    with private_redis() as server, tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, Any] = asyncio.run(run_all(server.url, Path(tmp)))
    figures["ok"] = all(figures[f"{n}_series_2_replicas"]["exactly_once"] for n in SERIES_COUNTS)
    return emit("replicas", figures)


if __name__ == "__main__":
    main()

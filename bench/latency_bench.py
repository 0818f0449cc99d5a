"""End-to-end latency: candle stored by ingest → prediction received by a subscriber.

One ``cryptocast forecast`` process serves N = 1, 10, 100, 1,000 series (see
:mod:`bench.pipeline`); each round every series' candle closes at the same instant. Each size
runs in both model scopes: ``global`` (one model shared by every series, the default) and
``series`` (one model per series). Each process is measured idle, then during a concurrent
retrain (a real ``forecaster.training.job`` process training the default model on a month of 1m
candles). The baseline in the same run is the per-series pipeline calling Keras
``model.predict`` per candle (at 1 and 10 series: see ``KERAS_COUNTS``). Per process: its start-up
(spawn → the first prediction published, and → every series' first one, each series' candle
written at the spawn) and its resident memory with its models loaded, read after the warm-up.
Per size, ``forward_floor_{n}_series``: the default model's forward pass alone over N windows
(one BLAS thread, as serving runs it), the floor under every round of the global model.

``LATENCY_ONLY`` runs the cells whose name starts with it (``1000_series_global``,
``10_series``, ``100_series_keras``...) and writes them as ``latency_partial``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.common import binance_1m_candles, emit, emit_progress, private_redis
from bench.pipeline import HISTORY, Pipeline, prepare
from config.settings import ModelSettings
from forecaster.heads import head_outputs
from forecaster.numpy_lstm import NumpyLSTM

SERIES_COUNTS = (1, 10, 100, 1000)
SCOPES = ("global", "series")
# The model.predict baseline blocks the event loop for ~100 ms a series: at 100 series a round
# blocks it for seconds, the workers' blocking reads time out and restart, and the baseline
# measures its own collapse (minutes per round) rather than inference. Run at 1 and 10.
KERAS_COUNTS = (1, 10)
ONLY = os.environ.get("LATENCY_ONLY")  # e.g. "10_series_global" while tuning
TARGETS_MS = {(100, "retrain"): 10.0, (1000, "retrain"): 100.0}  # p99, scope=global


def rounds(n: int, inference: str) -> int:
    """Rounds per scenario: at least ~100 samples for each p99 (a round gives one per series;
    ``model.predict`` costs ~0.1 s a series per round, so it gets no more)."""
    if inference == "keras":
        return {1: 100}.get(n, 10)
    return {1: 100, 10: 30, 100: 10}.get(n, 2)


def cells(n: int) -> list[tuple[str, str, str]]:
    """(name, scope, inference) of the cells run at ``n`` series, filtered by ``ONLY``."""
    out = [(f"{n}_series_{scope}", scope, "numpy") for scope in SCOPES]
    if n in KERAS_COUNTS:
        out.append((f"{n}_series_keras", "series", "keras"))
    return [c for c in out if not ONLY or c[0].startswith(ONLY)]


async def scenario(
    url: str, candles: list[Any], n: int, scope: str, inference: str, start: int, logs: Path
) -> tuple[dict[str, Any], int]:
    """Start-up, idle then during a retrain, in one forecaster process."""
    out: dict[str, Any] = {}
    async with Pipeline(url, candles, n, inference, start, logs, scope) as pipe:
        # model.predict blocks the loop for a second a round: a short TTL would move leases
        await pipe.start_replica("a", CRYPTOCAST_FORECAST__LEASE_TTL_S="60")
        warm_s = await pipe.warm_up()
        out["startup_s"] = pipe.startup
        out["rss_mb"] = pipe.rss()["a"]
        out["warm_up_s"] = round(warm_s, 1)
        label = f"{n} series {scope} {inference}"
        out["idle"] = await pipe.measure(rounds(n, inference), f"{label} idle")
        await pipe.start_retrain()
        out["retrain"] = await pipe.measure(rounds(n, inference), f"{label} retrain")
        await pipe.stop_retrain()
        out["log_warnings"] = pipe.warnings()
    return out, pipe.index


def forward_floor_ms(n: int, repeats: int = 20) -> dict[str, float]:
    """The default model's numpy forward pass alone over ``n`` windows, in this process with one
    BLAS thread (as serving runs it): the part of a round no serving code can avoid. Median and
    worst of ``repeats`` (ms). Random weights of the served shapes: the cost is the shapes'."""
    m = ModelSettings()
    rng = np.random.default_rng(0)
    f, u = len(m.features), m.units
    lstm = [
        (
            rng.normal(0, 0.1, (f if i == 0 else u, 4 * u)).astype(np.float32),
            rng.normal(0, 0.1, (u, 4 * u)).astype(np.float32),
            np.zeros(4 * u, np.float32),
        )
        for i in range(m.layers)
    ]
    k = head_outputs(m.head)
    net = NumpyLSTM(lstm, (rng.normal(0, 0.1, (u, k)).astype(np.float32), np.zeros(k, np.float32)))
    x = rng.normal(0, 1, (n, m.window, f)).astype(np.float32)
    times = []
    with threadpool_limits(1, user_api="blas"):
        net(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


async def run_all(url: str, logs: Path) -> dict[str, Any]:
    link = binance_1m_candles("linkusdt_binance_futures_1m_2026-02.csv")
    out: dict[str, Any] = {}
    for n in SERIES_COUNTS:
        todo = cells(n)
        if not todo:
            continue
        # one history for the size, both scopes' models promoted; the cells go on from the
        # candle where the previous one stopped
        out[f"forward_floor_{n}_series"] = forward_floor_ms(n)
        scopes = tuple(sorted({scope for _name, scope, _inference in todo}))
        out[f"prepare_s_{n}_series"] = round(await prepare(url, link, n, scopes), 1)
        index = HISTORY
        for name, scope, inference in todo:
            out[name], index = await scenario(url, link, n, scope, inference, index, logs)
            emit_progress(f"latency {name}: {out[name]}")
    return out


def main() -> dict[str, Any]:
    with private_redis() as server, tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, Any] = asyncio.run(run_all(server.url, Path(tmp)))
    if ONLY:
        return emit("latency_partial", figures)
    for n in KERAS_COUNTS:
        base = figures[f"{n}_series_keras"]
        for scope in SCOPES:
            fast = figures[f"{n}_series_{scope}"]
            for state in ("idle", "retrain"):
                figures[f"speedup_p99_vs_model_predict_{n}_series_{scope}_{state}"] = round(
                    base[state]["p99_ms"] / fast[state]["p99_ms"], 1
                )
    for n in SERIES_COUNTS:
        glob, ser = figures[f"{n}_series_global"], figures[f"{n}_series_series"]
        figures[f"global_p99_vs_series_{n}_series_retrain"] = round(
            ser["retrain"]["p99_ms"] / glob["retrain"]["p99_ms"], 1
        )
    for (n, state), target in TARGETS_MS.items():
        p99 = figures[f"{n}_series_global"][state]["p99_ms"]
        figures[f"target_p99_ms_{n}_series_{state}"] = target
        figures[f"ok_p99_{n}_series_{state}"] = p99 <= target
    most = figures[f"{SERIES_COUNTS[-1]}_series_global"]
    figures["target_rss_mb_1000_series"] = 300
    figures["ok_rss_1000_series"] = most["rss_mb"] <= 300
    figures["target_startup_s_1000_series"] = 10
    figures["ok_startup_1000_series"] = most["startup_s"]["all_s"] <= 10
    figures["ok"] = all(v for k, v in figures.items() if k.startswith("ok_"))
    return emit("latency", figures)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmarks: real data, a private Redis, result output."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from core.schemas import Candle
from cryptocast.redis_server import RedisServer
from tests.market_data import market_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"


def run_id() -> str | None:
    """The id ``python -m bench`` sets for its whole run (bench/__main__.py); None when a
    benchmark runs alone."""
    return os.environ.get("BENCH_RUN_ID")


def data_file(name: str) -> Path:
    """A real data file shipped in the repository (``data/*.gz``, unpacked once)."""
    return market_file(name)


def binance_1m_candles(name: str) -> list[Candle]:
    """Candles of one of the 12-column Binance 1m dumps (header row present)."""
    import pandas as pd

    df = pd.read_csv(data_file(name))
    return [
        Candle(int(t), float(o), float(h), float(lo), float(c), float(v), int(n))
        for t, o, h, lo, c, v, n in zip(
            df.open_time, df.open, df.high, df.low, df.close, df.volume, df["count"], strict=True
        )
    ]


@contextlib.contextmanager
def private_redis(**kwargs: Any) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="cryptocast-bench-") as d:
        server = RedisServer(Path(d), appendonly=kwargs.pop("appendonly", False), **kwargs)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def emit(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Print the benchmark's JSON line and merge it into bench/results.json."""
    line = {"bench": name, "machine": machine(), "run": run_id(), **figures}
    print(orjson.dumps(line).decode(), flush=True)
    results: dict[str, Any] = {}
    if RESULTS.exists():
        with contextlib.suppress(orjson.JSONDecodeError):
            results = orjson.loads(RESULTS.read_bytes())
    results[name] = line
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return line


def emit_progress(text: str) -> None:
    """A progress line on stderr (the JSON lines stay alone on stdout)."""
    print(f"# {text}", file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}"


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``), MB. Not ``ru_maxrss``: Linux keeps
    that across fork and exec, so a child of a large ``make bench`` process reported the
    parent's 1.9 GB as its own."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return round(int(row.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")

"""``python -m bench.report``: the scaling table of bench/results.json, as README markdown.

Columns are the number of series (symbols, for ingest): how each cost grows from 1 to 1,000.
A cell is empty where that size is not run (see each benchmark's docstring for why).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import RESULTS

SIZES = (1, 10, 100, 1000)
Row = tuple[str, Callable[[dict[str, Any], int], str | None]]


def _get(r: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(r, dict) or p not in r:
            return None
        r = r[p]
    return r


def _lat(r: dict[str, Any], bench: str, key: str, state: str) -> str | None:
    fig = _get(r, bench, key, state)
    return None if fig is None else f"{fig['p50_ms']:g} / {fig['p99_ms']:g}"


def _num(x: Any, unit: str = "") -> str | None:
    if x is None:
        return None
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:g}{unit}"


def _latency(prefix: str, bench: str, key: str, retrain: str = "retrain") -> list[Row]:
    """p50 / p99 rows of ``bench``'s figures under ``key`` (``{n}``: the size), idle and during
    a retrain."""
    return [
        (
            f"{prefix} p50 / p99 ms, {label}",
            lambda r, n, state=state: _lat(r, bench, key.format(n=n), state),
        )
        for state, label in (("idle", "idle"), ("retrain", retrain))
    ]


ROWS: list[Row] = [
    (
        "ingest: websocket msgs/s (symbols)",
        lambda r, n: _num(_get(r, "ingest", f"ws_path_msgs_per_s_{n}_symbols")),
    ),
    (
        "ingest: service RSS, MB (symbols)",
        lambda r, n: _num(_get(r, "memory", f"ingest_{n}_symbols", "rss_mb")),
    ),
    *_latency("latency", "latency", "{n}_series_numpy", retrain="during a retrain"),
    *_latency("baseline `model.predict`:", "latency", "{n}_series_keras"),
    (
        "forecaster RSS, MB (models loaded)",
        lambda r, n: _num(_get(r, "latency", f"{n}_series_numpy", "rss_mb")),
    ),
    *_latency("2 replicas: latency", "replicas", "{n}_series_2_replicas"),
    (
        "2 replicas: RSS of each, MB",
        lambda r, n: (
            None
            if (rss := _get(r, "replicas", f"{n}_series_2_replicas", "rss_mb")) is None
            else " + ".join(f"{v:,.0f}" for v in rss.values())
        ),
    ),
]


def table(results: dict[str, Any]) -> str:
    head = "| series → | " + " | ".join(f"{n:,}" for n in SIZES) + " |"
    lines = [head, "|---|" + "---|" * len(SIZES)]
    for label, cell in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(results, n) or "" for n in SIZES) + " |")
    return "\n".join(lines)


def load() -> dict[str, Any]:
    if not RESULTS.exists():
        return {}
    results: dict[str, Any] = orjson.loads(RESULTS.read_bytes())
    return results


def main() -> int:
    if not RESULTS.exists():
        print(f"no {RESULTS}: run `make bench` first", file=sys.stderr)
        return 1
    print(table(load()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

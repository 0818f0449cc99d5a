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


def _lat(r: dict[str, Any], bench: str, key: str, state: str, *sub: str) -> str | None:
    fig = _get(r, bench, key, state, *sub)
    return None if fig is None else f"{fig['p50_ms']:g} / {fig['p99_ms']:g}"


def _num(x: Any, unit: str = "") -> str | None:
    if x is None:
        return None
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:g}{unit}"


def _latency(
    prefix: str, bench: str, key: str, retrain: str = "retrain", suffix: str = ""
) -> list[Row]:
    """p50 / p99 rows of ``bench``'s figures under ``key`` (``{n}``: the size), idle and during
    a retrain."""
    return [
        (
            f"{prefix} p50 / p99 ms, {label}{suffix}",
            lambda r, n, state=state: _lat(r, bench, key.format(n=n), state),
        )
        for state, label in (("idle", "idle"), ("retrain", retrain))
    ]


SCOPES = (("global", "global model"), ("series", "per-series models"))


def _scoped(label: str, cell: Callable[[dict[str, Any], int, str], str | None]) -> list[Row]:
    """The row ``label`` twice: the global model, then per-series models beside it."""

    def bound(scope: str) -> Callable[[dict[str, Any], int], str | None]:
        return lambda r, n: cell(r, n, scope)

    return [(f"{label}: {name}", bound(scope)) for scope, name in SCOPES]


def _startup(fig: dict[str, float] | None) -> str | None:
    return None if fig is None else f"{fig['first_s']:g} / {fig['all_s']:g}"


ROWS: list[Row] = [
    (
        "ingest: websocket msgs/s (symbols)",
        lambda r, n: _num(_get(r, "ingest", f"ws_path_msgs_per_s_{n}_symbols")),
    ),
    (
        "ingest: service RSS, MB (symbols)",
        lambda r, n: _num(_get(r, "memory", f"ingest_{n}_symbols", "rss_mb")),
    ),
    *(
        row
        for scope, name in SCOPES
        for row in _latency(
            "latency", "latency", f"{{n}}_series_{scope}", "during a retrain", f": {name}"
        )
    ),
    *(
        (
            f"of it, up to the publication (the message's `latency_ms`): {name}, {label}",
            lambda r, n, scope=scope, state=state: _lat(
                r, "latency", f"{n}_series_{scope}", state, "published"
            ),
        )
        for scope, name in SCOPES
        for state, label in (("idle", "idle"), ("retrain", "during a retrain"))
    ),
    (
        "the default model's forward pass alone over N windows, ms (p50 / worst of 20)",
        lambda r, n: (
            None
            if (f := _get(r, "latency", f"forward_floor_{n}_series")) is None
            else f"{f['p50_ms']:g} / {f['max_ms']:g}"
        ),
    ),
    *_scoped(
        "forecaster RSS, MB (models loaded)",
        lambda r, n, scope: _num(_get(r, "latency", f"{n}_series_{scope}", "rss_mb")),
    ),
    *_scoped(
        "forecaster start-up s, spawn → first / last series' first prediction",
        lambda r, n, scope: _startup(_get(r, "latency", f"{n}_series_{scope}", "startup_s")),
    ),
]

# Rows run at some sizes only (why: their benchmarks' docstrings), in a table of their own.
EXTRA_SIZES = (1, 10, 100)
EXTRA_ROWS: list[Row] = [
    *_latency(
        "baseline `model.predict` (per-series, 1 and 10 series):", "latency", "{n}_series_keras"
    ),
    *_latency("2 replicas (10 and 100 series): latency", "replicas", "{n}_series_2_replicas"),
    (
        "2 replicas: RSS of each, MB",
        lambda r, n: (
            None
            if (rss := _get(r, "replicas", f"{n}_series_2_replicas", "rss_mb")) is None
            else " + ".join(f"{v:,.0f}" for v in rss.values())
        ),
    ),
]


def table(results: dict[str, Any], rows: list[Row] = ROWS, sizes: tuple[int, ...] = SIZES) -> str:
    head = "| series → | " + " | ".join(f"{n:,}" for n in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(results, n) or "" for n in sizes) + " |")
    return "\n".join(lines)


def accuracy_table(results: dict[str, Any]) -> str:
    """Global vs per-series models on the four 1m files (bench/global_bench.py), one row each."""
    g = results.get("global_training")
    if g is None:
        return ""
    glob, ser = g["global"], g["series_models"]
    lines = [
        f"| {g['train_candles']:,} candles a file, {g['epochs']} epochs | training s "
        "| MAE (naive) | CRPS ×1e4 |",
        "|---|---|---|---|",
    ]
    for key in g["series"]:
        gs, ss = glob["series"][key], ser["series"][key]
        lines.append(
            f"| {key}: global / per-series | — / {ss['seconds']:g} "
            f"| {gs['mae']:.5g} / {ss['mae']:.5g} "
            f"({ss['naive_mae']:.5g}) | {gs['crps'] * 1e4:.4f} / {ss['crps'] * 1e4:.4f} |"
        )
    lines.append(
        f"| all {len(g['series'])}: global / per-series | {glob['seconds']:g} / {ser['seconds']:g} "
        f"| | {g['pooled_crps_global'] * 1e4:.4f} / {g['pooled_crps_series'] * 1e4:.4f} |"
    )
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
    results = load()
    print(table(results))
    print()
    print(table(results, EXTRA_ROWS, EXTRA_SIZES))
    if acc := accuracy_table(results):
        print()
        print(acc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Terminal rendering of command results (rich)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def fmt_age(ms: int | None) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def print_status(report: list[dict[str, Any]], console: Console | None = None) -> None:
    """The ``status`` table: one row per series, stale rows in red."""
    table = Table(title="cryptocast status")
    for col in (
        "series",
        "candles",
        "last candle",
        "age",
        "holes",
        "model",
        "skill",
        "last prediction",
        "live MASE",
        "interval level",
        "state",
    ):
        table.add_column(col)
    for r in report:
        model = r["model"] or {}
        score = r["live_score"] or {}
        pred = r["last_prediction"]
        table.add_row(
            r["series"],
            str(r["candles"]),
            fmt_time(r["last_open_time"]),
            fmt_age(r["last_candle_age_ms"]),
            str(sum(h["count"] for h in r["holes"])),
            f"{model.get('version', '-')} ({model.get('kind', 'lstm')})" if model else "-",
            "-" if model.get("skill") is None else f"{model['skill']:+.3f}",
            fmt_time(pred["as_of"]) if pred else "-",
            "-" if score.get("mase") is None else f"{score['mase']:.3f}",
            _levels(r.get("calibration")),
            "[red]STALE: " + "; ".join(r["stale_reasons"]) + "[/red]" if r["stale"] else "ok",
        )
    (console or Console()).print(table)


def _levels(cal: dict[str, Any] | None) -> str:
    """Nominal → effective level of the live calibration, and the realised coverage."""
    if not cal or cal.get("effective") is None:
        return "-"
    cov = cal.get("coverage")
    tail = "" if cov is None else f" (cov {cov:.1%}, n={cal.get('scored', 0)})"
    return f"{cal['nominal']:.0%} → {cal['effective']:.1%}{tail}"


def print_backfill(report: dict[str, Any]) -> None:
    """Human summary of a backfill."""
    console = Console()
    rejected = ", ".join(f"{k}: {v}" for k, v in report["rejected"].items()) or "none"
    console.print(
        f"[bold]{report['series']}[/bold] from {report['source']}: "
        f"stored {report['stored']}, replaced {report['replaced']}, skipped {report['skipped']}, "
        f"rejected {sum(report['rejected'].values())} ({rejected}) in {report['seconds']:.1f}s; "
        f"range {fmt_time(report['first_open_time'])} → {fmt_time(report['last_open_time'])}"
    )
    for h in report["holes"]:
        console.print(
            f"  hole: {h['count']} candle(s) missing from {fmt_time(h['first'])} "
            f"to {fmt_time(h['last'])}"
        )
    for note in report["notes"]:
        console.print(f"  note: {note}")

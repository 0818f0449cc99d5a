"""Terminal rendering of command results (rich)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from storage.scores import relative_mae


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


def fmt_skill(skill: float | None) -> str:
    """Skill vs naive (1 - MAE/naive MAE) in percent, everywhere it is shown."""
    return "-" if skill is None or math.isnan(skill) else f"{skill:+.2%}"


@dataclass
class Column:
    """A column of a table that must fit the terminal: shown when there is room for it."""

    header: str
    cells: list[str]
    priority: int  # 0 = always shown; higher numbers give way first
    justify: Literal["left", "right"] = "left"
    wrap: bool = False  # may wrap inside its column (long free text) instead of being dropped

    def width(self) -> int:
        return max([len(self.header), *(len(Text.from_markup(c).plain) for c in self.cells)])


def fitted_table(
    title: str, columns: list[Column], width: int, caption: str | None = None
) -> Table:
    """A table of the columns that fit ``width``, in their given order.

    The first column (the series) is never truncated or wrapped: LINK and LTC must not both read
    ``binance:L…``. Columns that do not fit are left out by priority, rather than squeezed until
    every cell wraps over several lines; a wrapping column takes what room is left."""
    pad = 3  # a cell's padding and its border
    budget = width - 1
    shown: set[int] = set()
    for i in sorted(range(len(columns)), key=lambda i: (columns[i].priority, i)):
        col = columns[i]
        need = (min(col.width(), 24) if col.wrap else col.width()) + pad
        if col.priority == 0 or need <= budget:
            shown.add(i)
            budget -= need
    chosen = [c for i, c in enumerate(columns) if i in shown]
    if len(chosen) < len(columns):
        hidden = f"{len(columns) - len(chosen)} column(s) hidden: a wider terminal, or --json"
        caption = f"{caption}; {hidden}" if caption else hidden
    table = Table(title=title, caption=caption)
    for i, col in enumerate(chosen):
        table.add_column(
            col.header,
            justify=col.justify,
            no_wrap=not col.wrap,
            min_width=col.width() if i == 0 else None,
            overflow="fold",
        )
    for row in zip(*(c.cells for c in chosen), strict=True):
        table.add_row(*row)
    return table


def _state(r: dict[str, Any]) -> str:
    if r["stale"]:
        return "[red]STALE: " + "; ".join(r["stale_reasons"]) + "[/red]"
    if r.get("degraded"):
        return "[yellow]degraded: " + "; ".join(r["degraded_reasons"]) + "[/yellow]"
    return "ok"


def print_status(
    report: list[dict[str, Any]], console: Console | None = None, redis: str | None = None
) -> None:
    """The ``status`` table: one row per series, stale rows in red, degraded ones in yellow."""
    console = console or Console()
    models = [r["model"] or {} for r in report]
    scores = [r["live_score"] or {} for r in report]
    columns = [
        Column("series", [r["series"] for r in report], 0),
        Column("candles", [str(r["candles"]) for r in report], 2, "right"),
        Column("last candle", [fmt_time(r["last_open_time"]) for r in report], 4),
        Column("age", [fmt_age(r["last_candle_age_ms"]) for r in report], 1, "right"),
        Column("holes", [str(sum(h["count"] for h in r["holes"])) for r in report], 3, "right"),
        Column(
            "model",
            [
                f"{m['version']} ({m.get('kind', 'lstm')})" if m.get("version") else "-"
                for m in models
            ],
            5,
        ),
        Column("skill", [fmt_skill(m.get("skill")) for m in models], 2, "right"),
        Column(
            "last prediction",
            [
                fmt_time(r["last_prediction"]["as_of"]) if r["last_prediction"] else "-"
                for r in report
            ],
            6,
        ),
        Column(
            "live MAE / naive",
            ["-" if (rel := relative_mae(s)) is None else f"{rel:.3f}" for s in scores],
            1,
            "right",
        ),
        Column("interval level", [_levels(r.get("calibration")) for r in report], 3),
        Column("state", [_state(r) for r in report], 0, wrap=True),
    ]
    caption = f"Redis: {redis}" if redis else None
    console.print(fitted_table("cryptocast status", columns, console.width, caption))


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

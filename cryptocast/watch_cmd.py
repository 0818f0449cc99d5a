"""``cryptocast watch``: a live terminal view of the predictions as they are published.

One row per series, updated in place on every message of its channel (``--json``: one JSON line
per message instead, for piping into a bot or ``jq``). It starts from each series' latest
prediction, so the table is filled at once, then follows the channels. Ctrl-C exits cleanly
(exit code 0), as does ``--count N`` after N messages.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.lifecycle import cancel_all, on_signals
from core.schemas import Prediction
from core.series import SeriesId
from cryptocast.app import app
from cryptocast.runtime import AppState, open_storage, run
from cryptocast.views import Column, fitted_table, fmt_skill


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def render(latest: dict[str, Prediction | None], received: int, width: int = 200) -> Table:
    """The table: the newest prediction of each series, with the columns that fit ``width``."""
    now = time.time() * 1000
    rows: list[list[str]] = []
    for p in latest.values():
        if p is None:
            rows.append(["[dim]waiting…[/dim]", *([""] * 8)])
            continue
        change = (p.predicted_close / p.last_close - 1) * 100
        colour = "green" if change >= 0 else "red"
        rows.append(
            [
                _time(p.as_of),
                f"{p.last_close:.6g}",
                f"[{colour}]{p.predicted_close:.6g}[/{colour}]",
                f"[{colour}]{change:+.3f}%[/{colour}]",
                f"{p.interval_level:.0%} [{p.lower:.6g}, {p.upper:.6g}]",
                p.model.version + (" [yellow](stale)[/yellow]" if p.stale_model else ""),
                fmt_skill(p.model.skill),
                f"{p.latency_ms:.1f} ms",
                f"{max(0.0, now - p.published_at) / 1000:.0f}s",
            ]
        )
    cells = list(zip(*rows, strict=True)) if rows else [()] * 9
    spec = [  # header, priority, justify
        ("as of (UTC)", 3, "right"),
        ("last close", 1, "right"),
        ("predicted close", 0, "right"),
        ("change", 1, "right"),
        ("interval", 2, "right"),
        ("model", 5, "left"),
        ("skill", 4, "right"),
        ("latency", 6, "right"),
        ("age", 2, "right"),
    ]
    columns = [Column("series", list(latest), 0)] + [
        Column(h, list(c), prio, just)  # type: ignore[arg-type]
        for (h, prio, just), c in zip(spec, cells, strict=True)
    ]
    title = f"cryptocast predictions ({received} received; Ctrl-C to quit)"
    return fitted_table(title, columns, width)


async def watch_predictions(
    state: AppState, series: list[str] | None, json_lines: bool, count: int | None
) -> int:
    """Follow the channels until Ctrl-C/SIGTERM or ``count`` messages; returns messages seen."""
    settings = state.reader_settings(**({"series": series} if series else {}))
    ids: list[SeriesId] = settings.series_ids
    storage = await open_storage(settings)
    redis = storage.redis
    # stderr, so `watch --json | jq` still reads pure JSON lines
    where = state.queried(settings)
    sys.stderr.write(f"cryptocast watch: following {len(ids)} series on {where}\n")
    bus = storage.predictions
    latest: dict[str, Prediction | None] = {s.key: await bus.latest(s) for s in ids}
    received = 0
    stop = asyncio.Event()
    console = Console()
    live = (
        None
        if json_lines
        else Live(
            render(latest, 0, console.width), console=console, refresh_per_second=4, transient=False
        )
    )

    async def follow() -> None:
        nonlocal received
        async for p in bus.subscribe(ids):
            received += 1
            latest[p.series.key] = p
            if json_lines:
                sys.stdout.write(p.to_json().decode() + "\n")
                sys.stdout.flush()
            elif live is not None:
                live.update(render(latest, received, console.width))
            if count is not None and received >= count:
                stop.set()

    task = asyncio.create_task(follow(), name="watch")
    stopper = asyncio.create_task(stop.wait(), name="watch-stop")
    with on_signals(stop.set):
        try:
            if live is not None:
                live.start()
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        finally:
            await cancel_all(task, stopper)
            if live is not None:
                live.stop()
            await redis.aclose()
    return received


@app.command()
def watch(
    ctx: typer.Context,
    series: Annotated[
        list[str] | None,
        typer.Option("--series", help="Series to follow (repeatable; default: CRYPTOCAST_SERIES)."),
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="One Prediction JSON per line instead of a table.")
    ] = False,
    count: Annotated[int | None, typer.Option(help="Exit after this many messages.", min=1)] = None,
) -> None:
    """Live view of published predictions (a table updated in place); Ctrl-C to quit."""
    state: AppState = ctx.obj
    run(lambda: watch_predictions(state, series, json_lines, count))

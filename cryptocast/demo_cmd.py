"""``cryptocast demo``: the whole system offline, in one command (machinery in
:mod:`cryptocast.demo`, imported when the command runs so other commands start fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from config.logging import configure_logging
from cryptocast.app import app
from cryptocast.runtime import AppState, run


@app.command()
def demo(
    ctx: typer.Context,
    speed: Annotated[
        float, typer.Option(help="Replay speed × real time (60: a 1m candle per second).")
    ] = 60.0,
    predictions: Annotated[
        int, typer.Option(help="Stop after this many predictions per series.")
    ] = 120,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds anyway.")] = 420.0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <data_dir>/demo).")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Serve metrics: ingest on this port, forecaster on the next.")
    ] = 0,
) -> None:
    """Fully offline end-to-end run (replayed real candles, real services) with a PNG at the end."""
    state: AppState = ctx.obj
    settings = state.settings()
    # The demo's own output is the story; library INFO lines (the replay exchange's) would bury it.
    configure_logging(settings.log_format, "WARNING")
    from rich.console import Console

    from cryptocast.demo import DemoOptions, run_demo

    opts = DemoOptions(
        out_dir=out or settings.data_dir / "demo",
        speed=speed,
        predictions=predictions,
        timeout_s=timeout,
        metrics_port=metrics_port,
        announce_dir=settings.data_dir,
    )
    console = Console()
    if not console.is_terminal:  # piped or logged: do not wrap the lines at 80 columns
        console = Console(width=130)
    result = run(lambda: run_demo(opts, console))
    if result.interrupted:
        raise typer.Exit(130)  # the shell's code for Ctrl-C, after printing what was seen
    if result.png is None or any(c != 0 for c in result.codes.values()):
        raise typer.Exit(1)

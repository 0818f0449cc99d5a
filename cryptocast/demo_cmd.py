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
    )
    console = Console()
    if not console.is_terminal:  # piped or logged: do not wrap the lines at 80 columns
        console = Console(width=130)
    _summaries, png, codes = run(lambda: run_demo(opts, console))
    if png is None or any(c != 0 for c in codes.values()):
        raise typer.Exit(1)

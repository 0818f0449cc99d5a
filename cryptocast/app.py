"""The Typer application every command module registers on (see cryptocast/cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cryptocast.runtime import AppState

app = typer.Typer(
    name="cryptocast",
    help="Streaming near-real-time cryptocurrency price forecaster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", envvar="CRYPTOCAST_CONFIG", help="TOML settings file."),
    ] = None,
) -> None:
    ctx.obj = AppState(config_file=config)

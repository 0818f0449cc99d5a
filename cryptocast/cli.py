"""The ``cryptocast`` command line: parses arguments, builds objects, runs them. Nothing more."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from config.settings import SettingsError
from cryptocast.runtime import AppState, fail, open_store, run
from storage.clock import shared_clock
from storage.health import series_health

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


@app.command()
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    series: Annotated[
        list[str] | None, typer.Option("--series", help="Only these series (repeatable).")
    ] = None,
) -> None:
    """Per-series health; exits 1 when any series is stale (usable as a healthcheck)."""
    state: AppState = ctx.obj

    async def main() -> list[dict[str, object]]:
        settings = state.settings(**({"series": series} if series else {}))
        redis, store = await open_store(settings)
        try:
            clock = await shared_clock(redis, store.keys.clock(), settings.clock)
            return [
                await series_health(redis, store, s, clock, settings.schedule.stale_after)
                for s in settings.series_ids
            ]
        finally:
            await redis.aclose()

    report = run(main)
    if json_out:
        sys.stdout.write(orjson.dumps({"series": report}, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        from cryptocast.views import print_status

        print_status(report)
    if any(r["stale"] for r in report):
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SettingsError as e:  # raised while parsing options, before a command runs
        fail(str(e))


if __name__ == "__main__":
    main()

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


@app.command()
def backfill(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="csv, yahoo or ccxt.")],
    series: Annotated[str, typer.Option(help="Target series, e.g. binance:BTC/USDT:1h.")],
    file: Annotated[str | None, typer.Option("--file", help="CSV file (--source csv).")] = None,
    since: Annotated[
        str | None, typer.Option(help="First open time: ISO date/time (UTC) or epoch ms.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Last open time, same formats.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Store historical candles (idempotent and resumable); reports stored/skipped/rejected."""
    from cryptocast.backfill_cmd import run_backfill

    state: AppState = ctx.obj
    if source not in ("csv", "yahoo", "ccxt"):
        fail(f"--source must be csv, yahoo or ccxt (got {source!r})")
    if source == "csv" and not file:
        fail("--source csv needs --file PATH")
    report = run(
        lambda: run_backfill(state.settings(), source, series, file, since, until, quiet=json_out)
    )
    if json_out:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from cryptocast.views import print_backfill

        print_backfill(report)


@app.command()
def ingest(ctx: typer.Context) -> None:
    """Stream the configured series into Redis until SIGTERM (the compose `ingest` service)."""
    from cryptocast.services import serve_ingest

    state: AppState = ctx.obj
    run(lambda: serve_ingest(state.settings()))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SettingsError as e:  # raised while parsing options, before a command runs
        fail(str(e))


if __name__ == "__main__":
    main()

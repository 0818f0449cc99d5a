"""The ``cryptocast`` command line: parses arguments, builds objects, runs them. Nothing more.

Commands live here or in ``cryptocast/*_cmd.py`` modules that register on :data:`app`
(imported below for that side effect).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from config.settings import SettingsError
from core.clock import shared_clock
from cryptocast import backtest_cmd, demo_cmd, up_cmd, watch_cmd, web_cmd  # noqa: F401
from cryptocast.app import app
from cryptocast.runtime import AppState, fail, open_storage, run
from storage.health import series_health


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

    settings = state.reader_settings(**({"series": series} if series else {}))

    async def main() -> list[dict[str, object]]:
        storage = await open_storage(settings)
        redis = storage.redis
        try:
            clock = await shared_clock(redis, storage.keys.clock(), settings.clock)
            return [
                await series_health(
                    storage,
                    s,
                    clock,
                    settings.schedule.stale_after,
                    scope=settings.model.scope,
                )
                for s in settings.series_ids
            ]
        finally:
            await redis.aclose()

    report = run(main)
    if json_out:
        out = {"series": report, "redis": state.queried(settings)}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        from cryptocast.views import print_status

        print_status(report, redis=state.queried(settings))
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


@app.command("replay-exchange")
def replay_exchange(
    csv: Annotated[list[str], typer.Option("--csv", help="Candle CSV to replay (repeatable).")],
    symbol: Annotated[
        list[str] | None, typer.Option(help="Symbol per --csv, e.g. BTC/USDT (default: from file).")
    ] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe (default: from file).")] = None,
    speed: Annotated[float, typer.Option(help="Replay clock speed × real time.")] = 1.0,
    port: Annotated[int, typer.Option(help="Port (0 = any free port).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    start: Annotated[
        str | None, typer.Option(help="Replay start: epoch ms or ISO time (default: 1000 in).")
    ] = None,
    drop_after: Annotated[
        int | None, typer.Option(help="Fault: drop each connection after N messages.")
    ] = None,
    stall_after: Annotated[int | None, typer.Option(help="Fault: stall after N messages.")] = None,
    stall_seconds: Annotated[float, typer.Option(help="Fault: stall length.")] = 0.0,
    malformed_rate: Annotated[
        float, typer.Option(help="Fault: share of malformed messages.")
    ] = 0.0,
    delay_rate: Annotated[float, typer.Option(help="Fault: share of delayed messages.")] = 0.0,
    delay_seconds: Annotated[float, typer.Option(help="Fault: delay length.")] = 0.0,
    duplicate_rate: Annotated[float, typer.Option(help="Fault: share of duplicates.")] = 0.0,
    max_connection_seconds: Annotated[
        float | None, typer.Option(help="Close connections after this long (24 h-style limit).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Fault schedule seed.")] = 0,
) -> None:
    """Serve Binance's public websocket + REST protocols from CSVs of real candles (offline)."""
    from replay import FaultConfig, ReplayConfig, ReplaySource, run_replay_exchange

    symbols = symbol or []
    if symbols and len(symbols) != len(csv):
        fail("give --symbol once per --csv, or not at all")
    try:
        config = ReplayConfig(
            sources=[
                ReplaySource(Path(f), symbols[i] if symbols else None, timeframe)
                for i, f in enumerate(csv)
            ],
            host=host,
            port=port,
            speed=speed,
            start=start,
            max_connection_seconds=max_connection_seconds,
            faults=FaultConfig(
                seed=seed,
                drop_after=drop_after,
                stall_after=stall_after,
                stall_seconds=stall_seconds,
                malformed_rate=malformed_rate,
                delay_rate=delay_rate,
                delay_seconds=delay_seconds,
                duplicate_rate=duplicate_rate,
            ),
        )
    except (ValueError, OSError) as e:
        fail(str(e))
    from config.logging import configure_logging

    configure_logging("auto", "INFO")
    run(lambda: run_replay_exchange(config))


@app.command()
def forecast(ctx: typer.Context) -> None:
    """Serve predictions and retrain models until SIGTERM (the compose `forecaster` service)."""
    from cryptocast.services import serve_forecast

    state: AppState = ctx.obj
    run(lambda: serve_forecast(state.settings(), state.config_file))


def _stop_during_startup(signum: int, _frame: object) -> None:
    # Until a service installs its own graceful handler (after imports and connecting), SIGTERM
    # means "stop now": exit cleanly rather than die mid-import with a signal status.
    raise SystemExit(0)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _stop_during_startup)
    try:
        app()
    except SettingsError as e:  # raised while parsing options, before a command runs
        fail(str(e))


if __name__ == "__main__":
    main()

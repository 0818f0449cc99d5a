"""Wiring of ``cryptocast backfill``: pick the source, show progress, return the report."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.settings import Settings
from core.clock import WallClock
from core.series import SeriesError, SeriesId
from cryptocast.runtime import SourceUnavailable, open_storage


@contextlib.contextmanager
def _source_errors() -> Iterator[None]:
    """Network and provider failures become one line, not a traceback."""
    import ccxt

    from ingest.yahoo import YahooError

    try:
        yield
    except (ccxt.BaseError, YahooError, ConnectionError, TimeoutError) as e:
        raise SourceUnavailable(str(e).splitlines()[0][:300]) from None


class UsageError(ValueError):
    """A bad command-line value; reported as one line."""


def parse_time(text: str | None, flag: str) -> int | None:
    """``--since``/``--until``: epoch ms, or an ISO date/time taken as UTC."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is neither epoch ms nor an ISO date/time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


async def run_backfill(
    settings: Settings,
    source: str,
    series_text: str,
    file: str | None,
    since_text: str | None,
    until_text: str | None,
    *,
    quiet: bool,
) -> dict[str, Any]:
    from ingest import backfill as bf

    try:
        series = SeriesId.parse(series_text)
    except SeriesError as e:
        raise UsageError(f"--series: {e}") from None
    since, until = parse_time(since_text, "--since"), parse_time(until_text, "--until")
    storage = await open_storage(settings)
    redis, store = storage.redis, storage.candles
    clock = WallClock()
    progress = progress_bar(quiet)
    try:
        with progress, _source_errors():
            task = progress.add_task(f"{source} → {series.key}", total=None)

            def advance(n: int) -> None:
                progress.advance(task, n)

            if source == "csv":
                assert file is not None
                report = await bf.backfill_csv(
                    store,
                    series,
                    file,
                    clock,
                    since=since,
                    until=until,
                    progress=advance,
                    on_total=lambda n: progress.update(task, total=n),
                )
            elif source == "ccxt":
                from ingest.rest import CcxtKlineFetcher, make_exchange

                fetcher = CcxtKlineFetcher(
                    make_exchange(series.exchange, settings.binance_rest_url)
                )
                try:
                    report = await bf.backfill_fetched(
                        store,
                        series,
                        lambda t: fetcher.fetch(series, t),
                        clock,
                        since=since,
                        until=until,
                        progress=advance,
                        on_total=lambda n: progress.update(task, total=n),
                    )
                finally:
                    await fetcher.close()
            else:
                report = await backfill_yahoo(
                    store, series, since, until, advance, lambda n: progress.update(task, total=n)
                )
    finally:
        await redis.aclose()
    return report.to_dict()


def progress_bar(quiet: bool) -> Progress:
    """The bar of a long backfill (months of 1m candles over REST, a big file, Yahoo): on
    stderr, and only when both stdout and stderr are a terminal and ``--json`` is not given, so
    piped or JSON output stays clean."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet or not (sys.stdout.isatty() and sys.stderr.isatty()),
        transient=True,
    )


async def backfill_yahoo(
    store: Any,
    series: SeriesId,
    since: int | None,
    until: int | None,
    progress: Any,
    on_total: Any = None,
) -> Any:
    """Yahoo history goes to its own ``yahoo:SYMBOL:TF`` series, never an exchange's."""
    import asyncio
    import time

    from ingest import backfill as bf
    from ingest.yahoo import fetch_yahoo

    if series.exchange != "yahoo":
        raise UsageError(
            f"--source yahoo writes Yahoo's own series (e.g. yahoo:BTC-USD:1d), not {series.key}"
        )
    t0 = time.perf_counter()
    if since is None:
        last = await store.last_open_time(series)
        since = None if last is None else series.timeframe.next_open(last)
    now = WallClock().now_ms()
    # yfinance is synchronous (requests): keep it off the event loop.
    result = await asyncio.to_thread(
        fetch_yahoo, series.symbol, series.timeframe, since, until, now_ms=now
    )
    report = bf.BackfillReport(series.key, "yahoo")
    report.rejected = dict(result.rejected)
    report.notes += list(result.warnings)
    if result.forming_dropped:
        report.notes.append(f"{result.forming_dropped} still-forming row(s) left out")
    if on_total:
        on_total(len(result.candles))
    await bf.store_candles(store, series, result.candles, report, progress=progress)
    await bf.finish(store, series, report, t0)
    return report

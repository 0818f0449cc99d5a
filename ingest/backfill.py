"""Historical backfill from a CSV file, any ccxt exchange, or Yahoo Finance.

Every backfill is idempotent: candles already stored are counted as skipped, revised ones replace
the old, and nothing emits closed-candle events (history is not news for the forecaster).
Network sources are resumable: without ``since`` they start after the newest stored candle. A
local file is cheap to read again, so a CSV backfill always compares every row in range: rerun
with one altered row and exactly that candle is replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.clock import Clock
from core.lifecycle import cancel_and_wait
from core.schemas import Candle, candle_problem
from core.series import SeriesId
from ingest.csvfiles import CsvFile, CsvFormatError, CsvResult, open_csv
from storage.candles import CandleStore, UpsertResult
from storage.columns import I64, CandleColumns

CHUNK = 10_000
IN_FLIGHT = 2  # chunks a backfill keeps sent ahead (upserts of distinct candles commute)
Progress = Callable[[int], None]


@dataclass
class BackfillReport:
    """What ``cryptocast backfill --json`` prints (a contract: README, "Command line")."""

    series: str
    source: str
    stored: int = 0
    replaced: int = 0
    skipped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    holes: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    first_open_time: int | None = None
    last_open_time: int | None = None
    notes: list[str] = field(default_factory=list)
    trimmed: int = 0
    """Candles retention removed while this backfill ran (not part of the JSON report)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "source": self.source,
            "stored": self.stored,
            "replaced": self.replaced,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "holes": self.holes,
            "seconds": round(self.seconds, 3),
            "first_open_time": self.first_open_time,
            "last_open_time": self.last_open_time,
            "notes": self.notes,
        }


async def store_candles(
    store: CandleStore,
    series: SeriesId,
    candles: Iterable[Candle] | CandleColumns,
    report: BackfillReport,
    *,
    progress: Progress | None = None,
) -> None:
    """Upsert in chunks (no events), adding to the report's counters.

    One chunk stays in flight while the next is packed, so Redis runs the script of one while
    this process encodes the other (upserts of distinct candles commute, and the retention
    trim re-reads the count inside its script). Columns (a file) are packed as arrays.
    """
    batch: list[Candle] = []
    pending: asyncio.Task[UpsertResult] | None = None

    async def settle() -> None:
        nonlocal pending
        if pending is None:
            return
        task, pending = pending, None
        res = await task
        report.stored += res.new
        report.replaced += res.replaced
        report.skipped += res.unchanged
        report.trimmed += res.trimmed
        if progress:
            progress(res.new + res.replaced + res.unchanged)

    async def flush() -> None:
        nonlocal pending, batch
        task = asyncio.create_task(store.upsert(series, batch))
        batch = []
        await asyncio.sleep(0)  # let it pack and send before the previous one is awaited
        await settle()
        pending = task

    if isinstance(candles, CandleColumns):
        await _store_columns(store, series, candles, report, progress)
        return
    try:
        for c in candles:
            batch.append(c)
            report.first_open_time = min(report.first_open_time or c.open_time, c.open_time)
            report.last_open_time = max(report.last_open_time or c.open_time, c.open_time)
            if len(batch) >= CHUNK:
                await flush()
        if batch:
            await flush()
        await settle()
    finally:
        if pending is not None:  # an error (or cancellation) above: do not leave it running
            await cancel_and_wait(pending)


async def _store_columns(
    store: CandleStore,
    series: SeriesId,
    cols: CandleColumns,
    report: BackfillReport,
    progress: Progress | None,
) -> None:
    upserts = _Upserts(store, series, report, progress)
    try:
        await upserts.put(cols)
        await upserts.drain()
    finally:
        await upserts.abort()


class _Upserts:
    """Column upserts with :data:`IN_FLIGHT` chunks sent ahead, so Redis always has the next
    script call queued, even while the thread reading the file holds the GIL for a few ms; fed
    piece by piece, the pipeline runs on across the pieces of a file."""

    def __init__(
        self,
        store: CandleStore,
        series: SeriesId,
        report: BackfillReport,
        progress: Progress | None,
    ) -> None:
        self.store, self.series, self.report, self.progress = store, series, report, progress
        self.pending: deque[asyncio.Task[UpsertResult]] = deque()

    async def put(self, cols: CandleColumns) -> None:
        if not len(cols):
            return
        report = self.report
        first, last = int(cols.open_time.min()), int(cols.open_time.max())
        report.first_open_time = min(report.first_open_time or first, first)
        report.last_open_time = max(report.last_open_time or last, last)
        for start in range(0, len(cols), CHUNK):
            chunk = cols.take(slice(start, start + CHUNK))
            self.pending.append(asyncio.create_task(self.store.upsert(self.series, chunk)))
            await asyncio.sleep(0)  # let it pack and send before an older one is awaited
            while len(self.pending) > IN_FLIGHT:
                await self._settle_oldest()

    async def drain(self) -> None:
        """Wait for every chunk in flight and count them."""
        while self.pending:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        res = await self.pending[0]
        self.pending.popleft()
        report = self.report
        report.stored += res.new
        report.replaced += res.replaced
        report.skipped += res.unchanged
        report.trimmed += res.trimmed
        if self.progress:
            self.progress(res.new + res.replaced + res.unchanged)

    async def abort(self) -> None:
        """After an error (or cancellation): do not leave a chunk running."""
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        self.pending.clear()


async def finish(
    store: CandleStore,
    series: SeriesId,
    report: BackfillReport,
    t0: float,
    written: I64 | None = None,
) -> None:
    """Holes inside the backfilled range, and the elapsed time.

    ``written``: the open times this backfill just stored (a file's). Then only the open times
    of the range that the file lacks are looked up in Redis (a complete file: none), instead of
    every bucket of the range; unless retention trimmed some of the range meanwhile."""
    first, last = report.first_open_time, report.last_open_time
    if first is not None and last is not None:
        if written is not None and not report.trimmed:
            holes = await store.holes_besides(series, written, first, last)
        else:
            holes = await store.holes(series, first, last)
        report.holes = [h.to_dict() for h in holes]
    report.seconds = time.perf_counter() - t0


async def backfill_csv(
    store: CandleStore,
    series: SeriesId,
    path: str | Path,
    clock: Clock,
    *,
    since: int | None = None,
    until: int | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BackfillReport:
    """Store the candles of a CSV file (Binance dumps with or without header, Binance tables,
    Yahoo CSV) that fall in ``since..until``; rows failing validation are counted per reason."""
    t0 = time.perf_counter()
    report = BackfillReport(series.key, "csv")
    try:
        detected = open_csv(path).info.timeframe
    except CsvFormatError:
        detected = series.timeframe  # the file does not say: take the series' word for it
    if detected != series.timeframe:
        raise ValueError(f"{path} holds {detected} candles but the series is {series.key}")
    csv_file = CsvFile(path, timeframe=series.timeframe, now_ms=clock.now_ms())
    symbol = csv_file.info.symbol
    if symbol and symbol != series.market_id:
        report.notes.append(f"file symbol {symbol} stored as {series.key}")
    rejected: Counter[str] = Counter()
    early: list[tuple[int, int]] = []
    written: list[I64] = []
    total = 0
    parts = csv_file.results()

    def next_part() -> CsvResult | None:
        return next(parts, None)

    # The next piece is read (decompressed, parsed, judged: no GIL held for most of it) in a
    # thread while this one is stored, so the file costs little more than its store step.
    upserts = _Upserts(store, series, report, progress)
    part = await asyncio.to_thread(next_part)
    try:
        while part is not None:
            coming = asyncio.ensure_future(asyncio.to_thread(next_part))
            try:
                rejected.update(part.reject_counts)
                early += part.short_closes
                cols = part.columns
                keep = np.ones(len(cols), dtype=bool)
                if since is not None:
                    keep &= cols.open_time >= since
                if until is not None:
                    keep &= cols.open_time <= until
                report.skipped += int(len(cols) - keep.sum())
                in_range = cols if keep.all() else cols.take(keep)
                total += len(in_range)
                if on_total:
                    on_total(total)
                await upserts.put(in_range)
                written.append(in_range.open_time)
            except BaseException:
                await asyncio.gather(coming, return_exceptions=True)  # threads cannot be cancelled
                raise
            part = await coming
        await upserts.drain()
    finally:
        await upserts.abort()
    report.rejected = dict(rejected)
    if early:
        report.notes.append(
            f"{len(early)} candle(s) closed early by the exchange (a halt), stored: "
            + ", ".join(f"{_iso(o)} closed {_iso(c + 1)}" for o, c in early[:5])
            + (" ..." if len(early) > 5 else "")
        )
    await finish(store, series, report, t0, np.concatenate(written) if written else None)
    return report


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


async def backfill_fetched(
    store: CandleStore,
    series: SeriesId,
    fetch_page: Callable[[int], Any],
    clock: Clock,
    *,
    since: int | None = None,
    until: int | None = None,
    source: str = "ccxt",
    progress: Progress | None = None,
    page_limit: int = 1000,
    on_total: Callable[[int], None] | None = None,
) -> BackfillReport:
    """Page through a REST source (``fetch_page(since_ms) -> list[Candle]``) from ``since``
    (default: after the newest stored candle) to ``until`` (default: the newest closed candle).
    ``on_total`` hears how many candles the range holds (for a progress bar), before paging.

    REST through ccxt gives no close time: a candle the exchange closed early is known by its
    open time like any other, and is history once its interval is over."""
    t0 = time.perf_counter()
    tf = series.timeframe
    report = BackfillReport(series.key, source)
    now = clock.now_ms()
    end = min(until if until is not None else now, tf.open_time(tf.floor_index(now) - 1))
    if since is None:
        last = await store.last_open_time(series)
        if last is None:
            raise ValueError(
                f"{series.key} has no stored candles: give --since for a first backfill"
            )
        since = tf.next_open(last)
    if on_total and since <= end:
        on_total(tf.floor_index(end) - tf.floor_index(since) + 1)
    rejected: Counter[str] = Counter()
    cursor = since
    while cursor <= end:
        page: list[Candle] = await fetch_page(cursor)
        good = []
        for c in page:
            if c.open_time < cursor or c.open_time > end:
                continue
            reason = candle_problem(c, tf, now)
            if reason is None:
                good.append(c)
            elif reason != "future":  # the still-open candle: not history yet
                rejected[reason] += 1
        await store_candles(store, series, good, report, progress=progress)
        if not page or len(page) < page_limit or page[-1].open_time >= end:
            break
        cursor = tf.next_open(page[-1].open_time)
    report.rejected = dict(rejected)
    await finish(store, series, report, t0)
    return report

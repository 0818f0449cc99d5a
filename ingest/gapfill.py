"""Gap fill: after every (re)connect, fetch over REST what the websocket may have missed.

``fill_recent`` fetches every closed candle after the last point up to which the series was
complete (or the last ``initial_candles`` for an empty series); it asks nothing when every
candle closed since then, by the exchange's clock, is already stored, so a healthy stream costs
no REST calls. That point is remembered per series, not re-read as the newest stored candle:
after a reconnect the new connection may store a live candle before the gap fill looks, and
starting after *that* candle would leave the outage's candles out for good. ``fill_holes``
fills holes inside the stored range on start. A missing candle that the exchange skips in a range
it does return (like Binance's BTCUSDT 2023-03-24 13:00, a trading halt) is recorded as
unfillable and reported once, never requested again (docs/architecture.md, decision 5).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from config.logging import series_logger
from core.clock import Clock
from core.lifecycle import cancel_all
from core.schemas import Candle
from core.series import SeriesId
from ingest.prom import GAPFILL_CANDLES, UNFILLABLE
from ingest.sink import CandleSink, clock_margin_ms
from storage.candles import CandleStore

log = structlog.get_logger(__name__)


class KlineFetcher(Protocol):
    async def fetch(self, series: SeriesId, since_ms: int, limit: int = ...) -> list[Candle]: ...


class GapFiller:
    """Brings a series up to date over REST."""

    def __init__(
        self,
        store: CandleStore,
        sink: CandleSink,
        fetcher: KlineFetcher,
        clock: Clock,
        *,
        initial_candles: int = 1000,
        page_limit: int = 1000,
        clock_margin_s: float = 0.5,
        via: str = "rest",
    ) -> None:
        self.store = store
        self.sink = sink
        self.fetcher = fetcher
        self.clock = clock
        self.initial_candles = initial_candles
        self.page_limit = page_limit
        self.clock_margin_s = clock_margin_s
        self.via = via
        self.filled = 0
        # Per series: open time up to which the store is known complete (see the module doc).
        self._complete_until: dict[SeriesId, int] = {}
        self._running: dict[SeriesId, asyncio.Task[None]] = {}
        self._rerun: set[SeriesId] = set()

    def request(self, series: SeriesId) -> asyncio.Task[None]:
        """Single-flight :meth:`fill_recent`: while one runs for ``series``, a new request only
        marks it to run once more when done (a reconnect during a fill must not be lost, and
        two fills of one series must not race). The task is detached from the connection that
        asked: a dropped websocket does not cancel REST work in flight."""
        if series in self._running:
            self._rerun.add(series)
            return self._running[series]
        # Live candles wait while the fill runs, so events reach the forecaster in open-time
        # order; they are released however the fill ends (done, failed or cancelled).
        self.sink.hold(series)
        task = asyncio.create_task(self._fill_loop(series), name=f"gapfill:{series.key}")
        self._running[series] = task
        task.add_done_callback(lambda _t: self._done(series))
        return task

    def _done(self, series: SeriesId) -> None:
        self._running.pop(series, None)
        self.sink.release(series)

    async def _fill_loop(self, series: SeriesId) -> None:
        while True:
            self._rerun.discard(series)
            try:
                await self.fill_recent(series)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next connect or request tries again
                series_logger(series, __name__).warning("gapfill.failed", error=str(e)[:300])
            if series not in self._rerun:
                return

    async def cancel_all(self) -> None:
        tasks = list(self._running.values())
        await cancel_all(*tasks)

    async def fill_history(self, series: SeriesId) -> int:
        """Make sure ``initial_candles`` of history exist behind now (first start, or a store
        whose oldest candle is younger than that)."""
        tf = series.timeframe
        target = self._history_start(series)
        first = await self.store.first_open_time(series)
        if first is None and (running := self._running.get(series)) is not None:
            # The first connect's gap fill is fetching exactly this: join it, do not race it
            # (two fills of an empty series would both fetch ``initial_candles``).
            await asyncio.shield(running)
            first = await self.store.first_open_time(series)
        if first is None:
            return await self.fill_recent(series)
        if first <= target:
            return 0
        return await self.fill_range(series, target, tf.open_time(tf.floor_index(first) - 1))

    def _history_start(self, series: SeriesId, now: int | None = None) -> int:
        # ``initial_candles`` counting the one still forming: with a page limit of the same
        # size, the first page then holds every closed one *and* the open one after them,
        # which proves the newest closed one closed without a second request.
        tf = series.timeframe
        now = self.clock.now_ms() if now is None else now
        return tf.open_time(tf.floor_index(now) - self.initial_candles + 1)

    async def prime(self, series: SeriesId) -> None:
        """Take the store's newest candle as the point of completeness; call before the
        series' live source starts, so its first candles cannot move that point."""
        if series not in self._complete_until:
            last = await self.store.last_open_time(series)
            if last is not None:
                self._complete_until[series] = last

    async def fill_recent(self, series: SeriesId) -> int:
        """Fetch the closed candles missing since the series was last known complete; returns
        how many were stored."""
        tf = series.timeframe
        now = self.clock.now_ms()
        newest_closed = tf.open_time(tf.floor_index(now) - 1)
        mark = self._complete_until.get(series)
        if mark is None:
            mark = await self.store.last_open_time(series)
        if mark is None:
            since = self._history_start(series, now)
        else:
            missing = await self._first_missing(series, tf.next_open(mark), newest_closed)
            if missing is None:
                self._complete_until[series] = max(mark, newest_closed)
                return 0
            since = missing
        stored = await self.fill_range(series, since, newest_closed)
        still_missing = await self._first_missing(series, since, newest_closed)
        if still_missing is None:
            self._complete_until[series] = newest_closed
        elif still_missing > since:
            self._complete_until[series] = tf.open_time(tf.floor_index(still_missing) - 1)
        return stored

    async def _first_missing(self, series: SeriesId, first: int, last: int) -> int | None:
        """Open time of the first candle of ``first..last`` neither stored nor known to be
        missing at the exchange; ``None`` when there is none."""
        if last < first:
            return None
        tf = series.timeframe
        have = set(await self.store.open_times(series, first, last))
        have.update(t for t in await self.store.unfillable(series) if first <= t <= last)
        for i in range(tf.floor_index(first), tf.floor_index(last) + 1):
            if tf.open_time(i) not in have:
                return tf.open_time(i)
        return None

    async def fill_holes(self, series: SeriesId) -> int:
        """Fill the holes inside the stored range, skipping those known to be unfillable."""
        known = set(await self.store.unfillable(series))
        stored = 0
        tf = series.timeframe
        for hole in await self.store.holes(series):
            times = range(tf.floor_index(hole.first), tf.floor_index(hole.last) + 1)
            if all(tf.open_time(i) in known for i in times):
                continue
            stored += await self.fill_range(series, hole.first, hole.last)
        return stored

    async def fill_range(self, series: SeriesId, first: int, last: int) -> int:
        """Fetch and store the closed candles with open times in ``first..last``."""
        tf = series.timeframe
        stored = 0
        since = first
        returned: set[int] = set()
        evidence = first - 1  # newest open time the exchange showed us, stored or not
        while since <= last:
            page = await self.fetcher.fetch(series, since, self.page_limit)
            # A candle followed by another one in the page has surely closed. The last one is
            # judged on our reading of the exchange clock, which may run a little ahead: it must
            # have closed by a margin, or a still-open candle would be stored as closed (and,
            # were the websocket to drop before its final, never corrected).
            cutoff = self.clock.now_ms() - clock_margin_ms(self.clock, self.clock_margin_s)
            final_ok = bool(page) and tf.next_open(page[-1].open_time) <= cutoff
            shown = page if final_ok else page[:-1]
            closed = [c for c in shown if since <= c.open_time <= last]
            if shown:
                evidence = max(evidence, shown[-1].open_time)
            if closed:
                stored += await self.sink.write_now(series, closed, via=self.via)
                returned.update(c.open_time for c in closed)
            if not page or len(page) < self.page_limit:
                break
            if final_ok or page[-1].open_time > last:
                if page[-1].open_time >= last:
                    break
                since = tf.next_open(page[-1].open_time)
            else:
                # The page was cut right after an unsure candle: ask again from it, so that its
                # successor shows it closed (else it would be missing until the next fill).
                since = page[-1].open_time
        await self._record_skipped(series, first, min(last, evidence), returned)
        if stored:
            GAPFILL_CANDLES.labels(series.key).inc(stored)
            self.filled += stored
            series_logger(series, __name__).info(
                "gapfill.stored", candles=stored, first=first, last=last
            )
        return stored

    async def _record_skipped(
        self, series: SeriesId, first: int, last: int, returned: set[int]
    ) -> None:
        """Candles in ``first..last`` the exchange skipped while showing a later one."""
        tf = series.timeframe
        if last < first:
            return
        lo, hi = tf.floor_index(first), tf.floor_index(last)
        skipped = [tf.open_time(i) for i in range(lo, hi + 1) if tf.open_time(i) not in returned]
        if not skipped:
            return
        # Only candles absent from the store too: the websocket may have delivered them.
        present = set(await self.store.open_times(series, skipped[0], skipped[-1]))
        missing = [t for t in skipped if t not in present]
        if missing and await self.store.record_unfillable(series, missing):
            series_logger(series, __name__).warning(
                "hole.unfillable",
                first=missing[0],
                last=missing[-1],
                candles=len(missing),
                detail="the exchange has no candle there; reported once, not retried",
            )
        UNFILLABLE.labels(series.key).set(len(await self.store.unfillable(series)))

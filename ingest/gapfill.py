"""Gap fill: after every (re)connect, fetch over REST what the websocket may have missed.

``fill_recent`` fetches every closed candle since the newest stored one (or the last
``initial_candles`` for an empty series); it asks nothing when the newest closed candle, by the
exchange's clock, is already stored, so a healthy stream costs no REST calls. ``fill_holes``
fills holes inside the stored range on start. A missing candle that the exchange skips in a range
it does return (like Binance's BTCUSDT 2023-03-24 13:00, a trading halt) is recorded as
unfillable and reported once, never requested again (DESIGN.md decision 5).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from config.logging import series_logger
from ingest.metrics import GAPFILL_CANDLES, UNFILLABLE
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.clock import Clock
from storage.schemas import Candle
from storage.series import SeriesId

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
    ) -> None:
        self.store = store
        self.sink = sink
        self.fetcher = fetcher
        self.clock = clock
        self.initial_candles = initial_candles
        self.page_limit = page_limit
        self.filled = 0
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
        task = asyncio.create_task(self._fill_loop(series), name=f"gapfill:{series.key}")
        self._running[series] = task
        task.add_done_callback(lambda _t: self._running.pop(series, None))
        return task

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
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def fill_history(self, series: SeriesId) -> int:
        """Make sure ``initial_candles`` of history exist behind now (first start, or a store
        whose oldest candle is younger than that)."""
        tf = series.timeframe
        target = tf.open_time(tf.floor_index(self.clock.now_ms()) - self.initial_candles)
        first = await self.store.first_open_time(series)
        if first is None:
            return await self.fill_recent(series)
        if first <= target:
            return 0
        return await self.fill_range(series, target, tf.open_time(tf.floor_index(first) - 1))

    async def fill_recent(self, series: SeriesId) -> int:
        """Fetch closed candles after the newest stored one; returns how many were stored."""
        tf = series.timeframe
        now = self.clock.now_ms()
        newest_closed = tf.open_time(tf.floor_index(now) - 1)
        last = await self.store.last_open_time(series)
        if last is not None and last >= newest_closed:
            return 0
        if last is None:
            since = tf.open_time(tf.floor_index(now) - self.initial_candles)
        else:
            since = tf.next_open(last)
        return await self.fill_range(series, since, newest_closed)

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
            now = self.clock.now_ms()
            closed = [
                c for c in page if tf.next_open(c.open_time) <= now and since <= c.open_time <= last
            ]
            if page:
                evidence = max(evidence, page[-1].open_time)
            if closed:
                stored += await self.sink.write_now(series, closed, via="rest")
                returned.update(c.open_time for c in closed)
            if not page or len(page) < self.page_limit or page[-1].open_time >= last:
                break
            since = tf.next_open(page[-1].open_time)
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

"""The ingest service: every configured series kept complete in Redis, live, until SIGTERM.

Lifecycle: :meth:`IngestService.start` connects what must exist before anything runs (the
exchange clock when ``CRYPTOCAST_CLOCK=exchange``); :meth:`run` runs the sources, the sink's
writer, gap fill and the clock re-sync as one task group; :meth:`stop` (or SIGTERM via
:func:`cryptocast.services.run_until_signalled`) cancels them, lets the sink store what it
already accepted, and closes every connection: no orphan tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from redis.exceptions import RedisError

from config.settings import IngestMode, Settings
from core.backoff import Backoff
from core.clock import Clock, ExchangeClock, WallClock
from core.lifecycle import Service
from core.series import SeriesId
from ingest.binance_ws import BinanceKlineSource
from ingest.ccxt_source import CcxtPollSource, CcxtWatchSource
from ingest.gapfill import GapFiller
from ingest.prom import INGEST_LAG, SERIES_STALE
from ingest.rest import CcxtKlineFetcher, binance_server_time, make_exchange, make_pro_exchange
from ingest.sink import CandleSink
from storage.facade import Storage

log = structlog.get_logger(__name__)

CLOCK_RESYNC_S = 30.0
FRESHNESS_EVERY_S = 2.0
# The start-up history fill waits this long for a series' first connect, whose gap fill fetches
# the same candles (one REST call, not two); past it, history is fetched regardless.
FIRST_CONNECT_WAIT_S = 10.0

Source = BinanceKlineSource | CcxtWatchSource | CcxtPollSource


class IngestService(Service):
    """Runs ingestion for ``settings.series`` against one Redis."""

    def __init__(
        self, settings: Settings, storage: Storage, *, expected_interval_s: float = 2.0
    ) -> None:
        self.settings = settings
        self.store = storage.candles
        self.clock: Clock = ExchangeClock() if settings.clock == "exchange" else WallClock()
        self.sink = CandleSink(
            self.store, self.clock, clock_margin_s=settings.ingest.clock_margin_s
        )
        self.expected_interval_s = expected_interval_s
        self.fetchers: dict[str, CcxtKlineFetcher] = {}
        self.fillers: dict[str, GapFiller] = {}
        self.sources: list[Source] = []
        self.modes: dict[str, IngestMode] = {}
        self._connected: dict[SeriesId, asyncio.Event] = {}
        self._http: aiohttp.ClientSession | None = None
        self._stopped = asyncio.Event()
        self._closed = False
        self.ready = asyncio.Event()

    @property
    def series(self) -> list[SeriesId]:
        return self.settings.series_ids

    async def start(self) -> None:
        """Prepare connections; with the exchange clock, wait (retrying) for a first sync."""
        self._http = aiohttp.ClientSession()
        by_exchange: dict[str, list[SeriesId]] = defaultdict(list)
        for s in self.series:
            by_exchange[s.exchange].append(s)
        ingest = self.settings.ingest
        for exchange_id, series in by_exchange.items():
            mode = self.modes[exchange_id] = self._resolve_mode(exchange_id)
            fetcher = CcxtKlineFetcher(make_exchange(exchange_id, self.settings.binance_rest_url))
            self.fetchers[exchange_id] = fetcher
            filler = GapFiller(
                self.store,
                self.sink,
                fetcher,
                self.clock,
                clock_margin_s=ingest.clock_margin_s,
                via="poll" if mode == "poll" else "rest",
            )
            self.fillers[exchange_id] = filler
            for s in series:
                self._connected[s] = asyncio.Event()
                # Before any live candle can move the store's newest one (see gapfill).
                await filler.prime(s)
            source: Source
            if mode == "ws":
                source = BinanceKlineSource(
                    series,
                    self.settings.binance_ws_url,
                    self.sink,
                    ingest,
                    on_connect=self._gap_fill,
                    expected_interval_s=self.expected_interval_s,
                )
            elif mode == "watch":
                pro = make_pro_exchange(
                    exchange_id, self.settings.binance_rest_url, self.settings.binance_ws_url
                )
                if pro is None or not pro.has.get("watchOHLCV"):
                    raise ValueError(f"ccxt.pro has no watch_ohlcv for {exchange_id!r}; use poll")
                source = CcxtWatchSource(
                    series,
                    pro,
                    self.sink,
                    ingest,
                    on_connect=self._gap_fill,
                    expected_interval_s=self.expected_interval_s,
                )
            else:
                source = CcxtPollSource(series, filler, ingest, on_connect=self._gap_fill)
            self.sources.append(source)
            log.info("ingest.source", exchange=exchange_id, mode=mode, series=len(series))
        if isinstance(self.clock, ExchangeClock):
            await self._sync_clock(retry=True)
        else:
            # A reading left by an earlier run on the exchange clock would make every reader
            # judge staleness on a replay's time.
            await self.store.redis.delete(self.store.keys.clock())

    async def run(self) -> None:
        """Run until :meth:`stop`; returns after a clean shutdown. Connections are closed on
        every way out, a crashed task included."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.sink.run(), name="sink")]
                tasks += [
                    tg.create_task(src.run(), name=f"source-{type(src).__name__}")
                    for src in self.sources
                ]
                tasks.append(tg.create_task(self._fill_history_on_start(), name="fill-history"))
                if isinstance(self.clock, ExchangeClock):
                    tasks.append(tg.create_task(self._clock_loop(), name="clock"))
                tasks.append(tg.create_task(self._freshness_loop(), name="freshness"))
                self.ready.set()
                log.info("ingest.started", series=[s.key for s in self.series])
                await self._stopped.wait()
                for t in tasks[1:]:
                    t.cancel()
                for filler in self.fillers.values():
                    await filler.cancel_all()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self.sink.drained()
                tasks[0].cancel()
        finally:
            await self.close()
        log.info("ingest.stopped", stored=self.sink.stored, rejected=self.sink.rejects.by_reason())

    def stop(self) -> None:
        log.info("ingest.stopping")
        self._stopped.set()

    async def _freshness_loop(self) -> None:
        """Keep the lag and staleness gauges moving when candles stop coming: a silent series
        must show up in the metrics, not freeze them at their last healthy value."""
        stale_after = self.settings.schedule.stale_after
        while True:
            now = self.clock.now_ms()
            for s in self.series:
                with contextlib.suppress(RedisError, OSError):
                    last = await self.store.last_open_time(s)
                    if last is None:
                        continue
                    lag_ms = max(0, now - s.timeframe.next_open(last))
                    INGEST_LAG.labels(s.key).set(lag_ms / 1000)
                    SERIES_STALE.labels(s.key).set(int(lag_ms > stale_after * s.timeframe.ms))
            await asyncio.sleep(FRESHNESS_EVERY_S)

    async def close(self) -> None:
        """Close every exchange connection and the HTTP session (once)."""
        if self._closed:
            return
        self._closed = True
        for src in self.sources:
            if isinstance(src, CcxtWatchSource):
                await src.close()
        for f in self.fetchers.values():
            with contextlib.suppress(Exception):
                await f.close()
        if self._http is not None:
            await self._http.close()

    def _resolve_mode(self, exchange_id: str) -> IngestMode:
        mode = self.settings.ingest.mode_for(exchange_id)
        if mode == "ws" and exchange_id != "binance":
            raise ValueError(
                f"ingest mode 'ws' is Binance's kline stream; use watch or poll for {exchange_id!r}"
            )
        if mode != "auto":
            return mode
        if exchange_id == "binance":
            return "ws"
        pro = make_pro_exchange(exchange_id)
        return "watch" if pro is not None and pro.has.get("watchOHLCV") else "poll"

    def _gap_fill(self, series: Sequence[SeriesId]) -> None:
        for s in series:
            self._connected[s].set()
            self.fillers[s.exchange].request(s)

    async def _fill_history_on_start(self) -> None:
        """History depth first (the forecaster needs it to train), then holes in the store.

        Each series waits for its source's first connect, whose gap fill already fetches the
        latest candles: history then joins that fill instead of fetching them a second time."""
        for s in self.series:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # landing as the wait ends, and this loop (one wait per series) then went on
            # filling the history of 1,000 series after SIGTERM.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_CONNECT_WAIT_S):
                    await self._connected[s].wait()
            for step in (
                self.fillers[s.exchange].fill_history,
                self.fillers[s.exchange].fill_holes,
            ):
                try:
                    await self._with_redis_retry(step, s)
                except Exception as e:  # the next start tries again; live data flows regardless
                    log.warning("gapfill.start_failed", error=str(e)[:300], **s.log_fields())

    async def _with_redis_retry(self, fn: Any, series: SeriesId) -> Any:
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                return await fn(series)
            except (RedisError, OSError) as e:
                if isinstance(e, aiohttp.ClientError):
                    raise
                delay = backoff.next_delay()
                log.warning(
                    "ingest.redis_unavailable",
                    error=str(e).splitlines()[0][:200],
                    retry_in_s=round(delay, 2),
                    **series.log_fields(),
                )
                await asyncio.sleep(delay)

    async def _sync_clock(self, *, retry: bool) -> None:
        assert isinstance(self.clock, ExchangeClock) and self._http is not None
        backoff = Backoff(0.2, 10.0)
        while True:
            try:
                sync = await binance_server_time(self.settings.binance_rest_url, self._http)
                break
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as e:
                if not retry:
                    log.warning("clock.sync_failed", error=str(e)[:200])
                    return
                delay = backoff.next_delay()
                log.warning("clock.sync_failed", error=str(e)[:200], retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
        self.clock.update(sync)
        with contextlib.suppress(RedisError, OSError):
            await self.store.redis.set(self.store.keys.clock(), sync.to_json())

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_RESYNC_S)
            await self._sync_clock(retry=False)

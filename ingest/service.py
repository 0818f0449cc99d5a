"""The ingest service: every configured series kept complete in Redis, live, until SIGTERM.

Lifecycle: :meth:`IngestService.start` connects what must exist before anything runs (the
exchange clock when ``CRYPTOCAST_CLOCK=exchange``); :meth:`run` runs the sources, the sink's
writer, gap fill and the clock re-sync as one task group; :meth:`stop` (or SIGTERM via
:func:`run_until_signalled`) cancels them, lets the sink store what it already accepted, and
closes every connection: no orphan tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from redis.exceptions import RedisError

from config.settings import Settings
from ingest.backoff import Backoff
from ingest.binance_ws import BinanceKlineSource
from ingest.gapfill import GapFiller
from ingest.rest import CcxtKlineFetcher, binance_server_time, make_exchange
from ingest.sink import CandleSink
from storage.candles import CandleStore
from storage.clock import Clock, ExchangeClock, WallClock
from storage.series import SeriesId

log = structlog.get_logger(__name__)

CLOCK_RESYNC_S = 30.0


class IngestService:
    """Runs ingestion for ``settings.series`` against one Redis."""

    def __init__(
        self, settings: Settings, store: CandleStore, *, expected_interval_s: float = 2.0
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock: Clock = ExchangeClock() if settings.clock == "exchange" else WallClock()
        self.sink = CandleSink(store, self.clock)
        self.expected_interval_s = expected_interval_s
        self.fetchers: dict[str, CcxtKlineFetcher] = {}
        self.fillers: dict[str, GapFiller] = {}
        self.sources: list[BinanceKlineSource] = []
        self._http: aiohttp.ClientSession | None = None
        self._stopped = asyncio.Event()
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
        for exchange_id, series in by_exchange.items():
            fetcher = CcxtKlineFetcher(make_exchange(exchange_id, self.settings.binance_rest_url))
            self.fetchers[exchange_id] = fetcher
            self.fillers[exchange_id] = GapFiller(self.store, self.sink, fetcher, self.clock)
            if exchange_id == "binance":
                self.sources.append(
                    BinanceKlineSource(
                        series,
                        self.settings.binance_ws_url,
                        self.sink,
                        self.settings.ingest,
                        on_connect=self._gap_fill,
                        expected_interval_s=self.expected_interval_s,
                    )
                )
            else:
                raise NotImplementedError(
                    f"live ingestion for {exchange_id!r} is not available yet: only binance "
                    "series can be streamed (backfill works for any ccxt exchange)"
                )
        if isinstance(self.clock, ExchangeClock):
            await self._sync_clock(retry=True)

    async def run(self) -> None:
        """Run until :meth:`stop`; returns after a clean shutdown."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.sink.run(), name="sink")]
            tasks += [tg.create_task(src.run(), name="binance-ws") for src in self.sources]
            tasks.append(tg.create_task(self._fill_history_on_start(), name="fill-history"))
            if isinstance(self.clock, ExchangeClock):
                tasks.append(tg.create_task(self._clock_loop(), name="clock"))
            self.ready.set()
            log.info("ingest.started", series=[s.key for s in self.series])
            await self._stopped.wait()
            for t in tasks[1:]:
                t.cancel()
            for filler in self.fillers.values():
                await filler.cancel_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sink.drained(), 5)
            tasks[0].cancel()
        await self.close()
        log.info("ingest.stopped", stored=self.sink.stored, rejected=self.sink.rejects.by_reason())

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        for f in self.fetchers.values():
            with contextlib.suppress(Exception):
                await f.close()
        if self._http is not None:
            await self._http.close()

    def _gap_fill(self, series: Sequence[SeriesId]) -> None:
        for s in series:
            self.fillers[s.exchange].request(s)

    async def _fill_history_on_start(self) -> None:
        """History depth first (the forecaster needs it to train), then holes in the store."""
        for s in self.series:
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


async def run_until_signalled(service: IngestService) -> None:
    """Start and run ``service``; SIGTERM or SIGINT stops it gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    try:
        await service.start()
        await service.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

"""Live candles from exchanges other than Binance's native stream, through ccxt.

Two ways, one result: the same :class:`~core.schemas.Candle` into the same
:class:`~ingest.sink.CandleSink`.

* :class:`CcxtPollSource` polls REST (``fetch_ohlcv``, ccxt's rate limiter on) every
  ``ingest.poll_interval_s``. It is the gap filler run on a timer: REST returns the still-open
  candle last, so a candle counts as closed when another one follows it, or when its close is
  before the exchange's time (by :func:`~ingest.sink.clock_margin_ms`); and a poll that finds
  the newest closed candle already stored costs no request.
* :class:`CcxtWatchSource` follows ccxt.pro's ``watch_ohlcv``. That has no closed flag, so a
  candle is closed once the next one has appeared on the same connection, with the last values
  seen for it. ccxt.pro reconnects by itself on the next call after a drop, often without
  raising; the source notices every new connection (ccxt's ``on_connected`` hook), asks for a
  gap fill over REST then, as the Binance source does, and forgets the candle it was holding
  (its final update may have been lost with the old connection). A silent stream (no update for
  ``stale_factor`` × the expected interval) closes the websockets so the next call reconnects;
  errors back off exponentially with jitter (:class:`~core.backoff.Backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import structlog

from config.settings import IngestSettings
from core.backoff import Backoff, StateLog
from core.schemas import Candle
from core.series import SeriesId
from ingest.binance_ws import ConnectionStats, OnConnect
from ingest.gapfill import GapFiller
from ingest.prom import RECONNECTS
from ingest.sink import CandleSink

log = structlog.get_logger(__name__)


def ohlcv_candle(row: Sequence[Any]) -> Candle:
    """One ccxt OHLCV row ``[t, o, h, l, c, v]`` as a :class:`Candle` (volume ``None`` → 0)."""
    return Candle(
        int(row[0]),
        float(row[1]),
        float(row[2]),
        float(row[3]),
        float(row[4]),
        float(row[5] or 0.0),
    )


class CcxtPollSource:
    """Polls closed candles of ``series`` (one exchange) over REST into the sink."""

    def __init__(
        self,
        series: Sequence[SeriesId],
        filler: GapFiller,
        settings: IngestSettings,
        *,
        on_connect: OnConnect | None = None,
    ) -> None:
        self.series = list(series)
        self.filler = filler
        self.interval_s = settings.poll_interval_s
        self.on_connect = on_connect
        self.polls = 0

    async def run(self) -> None:
        """Poll until cancelled. Each poll is the filler's single-flight fill of the series, so
        it never races the start-up history fill or itself; failures are logged by the filler
        and retried at the next poll."""
        if self.on_connect is not None:
            self.on_connect(self.series)  # the first poll (and the start-up history fill's cue)
        while True:
            await asyncio.sleep(self.interval_s)
            self.polls += 1
            tasks = [self.filler.request(s) for s in self.series]
            # Shielded: cancelling the source must not cancel a fill the service also awaits;
            # the service cancels fills itself on stop.
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))


class CcxtWatchSource:
    """Streams closed candles of ``series`` (one exchange) with ccxt.pro's ``watch_ohlcv``."""

    def __init__(
        self,
        series: Sequence[SeriesId],
        exchange: Any,
        sink: CandleSink,
        settings: IngestSettings,
        *,
        on_connect: OnConnect | None = None,
        expected_interval_s: float = 2.0,
    ) -> None:
        self.series = list(series)
        self.exchange = exchange
        self.sink = sink
        self.settings = settings
        self.on_connect = on_connect
        self.stats = ConnectionStats()
        self.stale_after_s = settings.stale_factor * expected_interval_s
        self.generation = 0
        self._closed_generation = -1
        # ccxt calls on_connected for every websocket it opens (first connect and reconnects).
        original = exchange.on_connected

        def on_connected(client: Any, message: Any = None) -> None:
            self.generation += 1
            self.stats.connects += 1
            if self.stats.connects > 1:
                self.stats.reconnects += 1
                RECONNECTS.labels(exchange.id, "watch").inc()
            original(client, message)
            # Here, not on the first update: a silent stream (one that has ended, or a stall
            # that outlived the reconnect) must still get its gap fill.
            if self.on_connect is not None:
                self.on_connect(self.series)

        exchange.on_connected = on_connected

    async def run(self) -> None:
        """Watch every series until cancelled; cancelling stops them all."""
        async with asyncio.TaskGroup() as tg:
            for s in self.series:
                tg.create_task(self._watch_loop(s), name=f"ccxt-watch:{s.key}")

    async def close(self) -> None:
        """Close the exchange's websockets and HTTP session."""
        with contextlib.suppress(Exception):
            await self.exchange.close()

    async def _watch_loop(self, series: SeriesId) -> None:
        states = StateLog(log.bind(**series.log_fields(), source="ccxt.pro"))
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        pending: Candle | None = None  # newest candle seen on this connection, maybe still open
        seen_generation = 0
        tf = series.timeframe.text
        while True:
            generation = self.generation
            try:
                # asyncio.timeout, not wait_for: see BinanceKlineSource._read.
                async with asyncio.timeout(self.stale_after_s):
                    rows = await self.exchange.watch_ohlcv(series.symbol, tf)
            except TimeoutError:
                self.stats.stale_reconnects += 1
                states.enter("stale", after_s=self.stale_after_s)
                pending = None
                await self._force_reconnect(generation)
                continue
            except Exception as e:  # ccxt's NetworkError/ExchangeError, OSError: retry later
                pending = None
                delay = backoff.next_delay()
                self.stats.reconnect_delays.append(delay)
                states.enter("failed", error=f"{type(e).__name__}: {str(e)[:200]}")
                await asyncio.sleep(delay)
                continue
            arrived = time.time_ns() // 1_000_000
            self.stats.messages += 1
            if self.generation != seen_generation:
                # A new connection: the held candle's final update may have been lost with the
                # old one, so it is not trusted; gap fill brings whatever closed meanwhile.
                seen_generation = self.generation
                pending = None
                backoff.reset()
                states.enter("connected", connection=seen_generation)
            for row in sorted(rows, key=lambda r: r[0]):
                try:
                    candle = ohlcv_candle(row)
                except (TypeError, ValueError, IndexError) as e:
                    self.sink.rejects.reject(series, "malformed", f"{row!r}: {e}")
                    continue
                if pending is not None and candle.open_time > pending.open_time:
                    self.stats.closed_candles += 1
                    self.sink.offer(series, pending, arrived, via="watch")
                if pending is None or candle.open_time >= pending.open_time:
                    pending = candle

    async def _force_reconnect(self, generation: int) -> None:
        # Several series share a websocket: only the first to notice a stall closes it.
        if generation <= self._closed_generation or generation != self.generation:
            return
        self._closed_generation = generation
        with contextlib.suppress(Exception):
            await self.exchange.close_ws_clients()

"""Binance's public kline websocket: many series over few connections, kept alive through faults.

Each connection carries up to ``streams_per_connection`` combined streams
(``/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m``; Binance allows 1,024). A connection is
replaced when it drops, when no message arrived for ``stale_factor`` × the expected message
interval (a silent stall keeps the socket open, so TCP alone would never notice), and
proactively before Binance's 24 h limit. Reconnects back off exponentially with jitter. After
every (re)connect the ``on_connect`` hook schedules gap fill over REST, which runs apart from
the connection so live candles are not held up by it, nor it cancelled by the next drop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from config.settings import IngestSettings
from core.backoff import Backoff, StateLog
from core.schemas import CandleError
from core.series import SeriesId
from ingest.binance_format import parse_kline_message, stream_name
from ingest.prom import RECONNECTS
from ingest.sink import CandleSink

log = structlog.get_logger(__name__)

# Called after every (re)connect with the connection's series; must return quickly (it schedules
# REST work elsewhere) because messages are not read while it runs.
OnConnect = Callable[[Sequence[SeriesId]], None]


@dataclass
class ConnectionStats:
    """Counters of one source, for tests, metrics and ``status``."""

    connects: int = 0
    reconnects: int = 0
    messages: int = 0
    closed_candles: int = 0
    stale_reconnects: int = 0
    age_reconnects: int = 0
    reconnect_delays: list[float] = field(default_factory=list)


class BinanceKlineSource:
    """Streams closed klines of ``series`` (all on one Binance-compatible server) into a sink."""

    def __init__(
        self,
        series: Sequence[SeriesId],
        ws_url: str,
        sink: CandleSink,
        settings: IngestSettings,
        *,
        on_connect: OnConnect | None = None,
        expected_interval_s: float = 2.0,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.sink = sink
        self.settings = settings
        self.on_connect = on_connect
        self.stats = ConnectionStats()
        # Binance pushes a kline update about every 2 s per stream while the market trades.
        self.stale_after_s = settings.stale_factor * expected_interval_s
        self._by_stream: dict[str, SeriesId] = {
            stream_name(s.market_id, s.timeframe.text): s for s in series
        }
        streams = list(self._by_stream)
        n = settings.streams_per_connection
        self.groups = [streams[i : i + n] for i in range(0, len(streams), n)]
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Run every connection until cancelled; cancelling stops them all cleanly."""
        async with asyncio.TaskGroup() as tg:
            for i, group in enumerate(self.groups):
                tg.create_task(self._connection_loop(i, group), name=f"binance-ws-{i}")

    def url_for(self, streams: Sequence[str]) -> str:
        return f"{self.ws_url}/stream?streams={'/'.join(streams)}"

    async def _connection_loop(self, number: int, streams: list[str]) -> None:
        states = StateLog(log.bind(exchange="binance", connection=number, streams=len(streams)))
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        series = [self._by_stream[s] for s in streams]
        first = True
        while True:
            reason = "closed"
            try:
                async with connect(
                    self.url_for(streams),
                    max_size=self.settings.max_frame_bytes,
                    open_timeout=10,
                    close_timeout=2,
                    ping_interval=20,
                    ping_timeout=20,
                ) as ws:
                    self.stats.connects += 1
                    if not first:
                        self.stats.reconnects += 1
                    first = False
                    states.enter("connected")
                    backoff.reset()
                    if self.on_connect is not None:
                        self.on_connect(series)
                    reason = await self._read(ws)
            except ConnectionClosed as e:
                # 1009 is in the close frame we sent when we refused an oversized frame
                too_big = any(f is not None and f.code == 1009 for f in (e.sent, e.rcvd))
                reason = "frame_too_big" if too_big else "dropped"
            except (OSError, InvalidHandshake, TimeoutError) as e:
                reason = "connect_failed"
                states.enter("failed", error=str(e)[:200])
            except InvalidURI:
                raise
            RECONNECTS.labels("binance", reason).inc()
            if reason != "connect_failed":
                states.enter("disconnected", reason=reason)
            delay = backoff.next_delay()
            self.stats.reconnect_delays.append(delay)
            await asyncio.sleep(delay)

    async def _read(self, ws: ClientConnection) -> str:
        opened = time.monotonic()
        max_age = self.settings.max_connection_age_s
        while True:
            remaining_age = max_age - (time.monotonic() - opened)
            if remaining_age <= 0:
                self.stats.age_reconnects += 1
                return "max_age"
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that coincides with its timeout, and shutdown would hang here.
                async with asyncio.timeout(min(self.stale_after_s, remaining_age)):
                    raw = await ws.recv()
            except TimeoutError:
                if time.monotonic() - opened >= max_age:
                    self.stats.age_reconnects += 1
                    return "max_age"
                self.stats.stale_reconnects += 1
                return "stale"
            self.stats.messages += 1
            self._handle(raw)

    def _handle(self, raw: str | bytes) -> None:
        arrived = time.time_ns() // 1_000_000
        try:
            update = parse_kline_message(raw)
        except CandleError as e:
            self.sink.rejects.reject(None, e.reason, e.detail)
            return
        if update is None:
            return
        series = self._by_stream.get(stream_name(update.market_id, update.interval))
        if series is None:
            known = {s.market_id for s in self._by_stream.values()}
            reason = "wrong_interval" if update.market_id in known else "wrong_symbol"
            self.sink.rejects.reject(None, reason, f"{update.market_id} {update.interval}")
            return
        if update.closed:
            self.stats.closed_candles += 1
            self.sink.offer(series, update.candle, arrived, via="ws", close_time=update.close_time)

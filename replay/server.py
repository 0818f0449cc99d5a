"""The replay exchange: one aiohttp server for Binance's websocket streams and REST endpoints."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import suppress
from typing import Any

import structlog
from aiohttp import web

from core.lifecycle import on_signals
from replay.config import ReplayConfig, parse_time
from replay.connection import ClientConnection
from replay.history import ReplayClock, SymbolHistory, load_history
from replay.hub import ReplayStats, StreamHub
from replay.protocol import parse_stream
from replay.rest import RestApi, build_exchange_info, load_exchange_info

log = structlog.get_logger(__name__)


class ReplayExchange:
    """A local Binance (public market data) replaying CSV candles on an accelerated clock.

    ``await start()`` loads the CSVs, binds the port and starts the clock; ``await stop()``
    closes every websocket and cancels every task it created. Also an async context manager.
    The websocket goes quiet when a CSV runs out (no looping); REST keeps serving history.
    """

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.stats = ReplayStats()
        self.histories: list[SymbolHistory] = []
        self.clock: ReplayClock | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._hub: StreamHub | None = None
        self._connections: set[ClientConnection] = set()
        self._numbers = itertools.count()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> int:
        """Load the CSVs, serve, start the clock; returns the bound port."""
        if self._runner is not None:
            raise RuntimeError("replay exchange already started")
        cfg = self.config
        self.histories = await asyncio.to_thread(lambda: [load_history(s) for s in cfg.sources])
        streams = [h.stream_name for h in self.histories]
        if len(set(streams)) != len(streams):
            raise ValueError(f"two sources replay the same stream: {streams}")
        recorded = await asyncio.to_thread(load_exchange_info, cfg.exchange_info_path)
        info = build_exchange_info(
            recorded, {h.symbol for h in self.histories}, cfg.exchange_info_symbols == "replayed"
        )
        self.clock = ReplayClock(self._start_ms(), cfg.speed)
        self._hub = StreamHub(self.histories, self.clock, cfg.updates_per_candle)
        app = web.Application()
        app.router.add_get("/ws", self._ws_raw)
        app.router.add_get("/ws/{tail:.*}", self._ws_raw)
        app.router.add_get("/stream", self._ws_combined)
        RestApi(self.histories, self.clock, self.stats, info).add_routes(app)
        app.middlewares.append(self._count_rest)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.clock.begin()
        log.info(
            "replay.started",
            port=self.port,
            streams=streams,
            speed=cfg.speed,
            start_ms=self.clock.now_ms(),
            faults=cfg.faults.active,
        )
        return self.port

    async def stop(self) -> None:
        """Close every connection and cancel every task; safe to call twice."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self._hub is not None:
            await self._hub.close()
        conns = list(self._connections)
        await asyncio.gather(
            *(c.close(1001, b"server shutdown") for c in conns), return_exceptions=True
        )
        await runner.cleanup()
        log.info("replay.stopped", **self.stats.to_dict())

    async def __aenter__(self) -> ReplayExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _start_ms(self) -> int:
        if self.config.start is not None:
            return parse_time(self.config.start)
        first = self.histories[0]
        return first.open_times[min(self.config.history_candles, len(first) - 1)]

    # -- public helpers ---------------------------------------------------------------------

    def now_ms(self) -> int:
        """Current replay time (epoch ms)."""
        if self.clock is None:
            raise RuntimeError("replay exchange not started")
        return self.clock.now_ms()

    def jump_to(self, t_ms: int) -> None:
        """Move the replay clock forward (streams emit every final they pass)."""
        if self.clock is None:
            raise RuntimeError("replay exchange not started")
        self.clock.jump_to(t_ms)

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("replay exchange not started")
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """``http://host:port`` (Binance's ``https://api.binance.com``)."""
        return f"http://{self.base_url}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/ws`` (Binance's ``wss://stream.binance.com:9443/ws``)."""
        return f"ws://{self.base_url}/ws"

    @property
    def stream_url(self) -> str:
        """``ws://host:port/stream`` (combined streams)."""
        return f"ws://{self.base_url}/stream"

    def ccxt_config(self) -> dict[str, Any]:
        """Constructor config for ``ccxt.binance`` / ``ccxt.pro.binance`` pointing here."""
        return {
            "urls": {
                "api": {
                    "public": f"{self.rest_url}/api/v3",
                    "private": f"{self.rest_url}/api/v3",
                    "v1": f"{self.rest_url}/api/v1",
                    "ws": {"spot": self.ws_url},
                }
            },
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
        }

    # -- handlers ---------------------------------------------------------------------------

    @web.middleware
    async def _count_rest(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            self.stats.rest_calls += 1
        response: web.StreamResponse = await handler(request)
        return response

    async def _ws_raw(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        return await self._serve_ws(request, [p for p in tail.split("/") if p], combined=False)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        names = request.query.get("streams", "")
        return await self._serve_ws(request, [p for p in names.split("/") if p], combined=True)

    async def _serve_ws(
        self, request: web.Request, names: list[str], *, combined: bool
    ) -> web.StreamResponse:
        assert self._hub is not None and self.clock is not None
        cfg = self.config
        # timeout bounds the close handshake, so stop() cannot hang on a silent client.
        ws = web.WebSocketResponse(
            timeout=2.0,
            heartbeat=cfg.ping_interval,
            max_msg_size=cfg.max_message_size,
            compress=False,
        )
        await ws.prepare(request)
        self.stats.connections_accepted += 1
        self.stats.connections_open += 1
        # Path segments that are not stream names (ccxt connects to /ws/0) are ignored.
        streams = [n for n in names if parse_stream(n) is not None]
        conn = ClientConnection(
            next(self._numbers),
            request,
            ws,
            combined=combined,
            hub=self._hub,
            clock=self.clock,
            config=cfg,
            stats=self.stats,
        )
        self._connections.add(conn)
        try:
            await conn.run(streams)
        finally:
            self._connections.discard(conn)
            self.stats.connections_open -= 1
            if not ws.closed:
                with suppress(Exception):
                    await ws.close()
        return ws


async def run_replay_exchange(config: ReplayConfig) -> None:
    """Serve the replay exchange until cancelled or SIGTERM/SIGINT (for the CLI)."""
    exchange = ReplayExchange(config)
    await exchange.start()
    stop = asyncio.Event()
    try:
        log.info("replay.serving", rest_url=exchange.rest_url, ws_url=exchange.ws_url)
        with on_signals(stop.set):
            await stop.wait()
    finally:
        await exchange.stop()

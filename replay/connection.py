"""One client websocket: Binance's subscription requests in, kline messages (and faults) out."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web

from core.lifecycle import cancel_all, with_timeout
from replay.config import ReplayConfig
from replay.faults import ConnectionFaults
from replay.history import ReplayClock
from replay.hub import DataMessage, ReplayStats, StreamHub
from replay.protocol import WS_METHODS, parse_stream, ws_error, ws_result

log = structlog.get_logger(__name__)

# A client this far behind is cut off, as Binance does with slow consumers.
MAX_QUEUED = 50_000


class _Dropped(Exception):
    """The connection was ended on purpose (fault, limit, overflow)."""


class ClientConnection:
    """Serves one websocket until it closes; :meth:`run` is awaited by the request handler."""

    def __init__(
        self,
        number: int,
        request: web.Request,
        ws: web.WebSocketResponse,
        *,
        combined: bool,
        hub: StreamHub,
        clock: ReplayClock,
        config: ReplayConfig,
        stats: ReplayStats,
    ) -> None:
        self.number = number
        self.request = request
        self.ws = ws
        self.combined = combined
        self.hub = hub
        self.clock = clock
        self.config = config
        self.stats = stats
        self.faults = ConnectionFaults(config.faults, number)
        self.subscriptions: dict[str, None] = {}
        self.sent = 0
        self._queue: asyncio.Queue[DataMessage | str] = asyncio.Queue()
        self._delayed: list[tuple[float, int, DataMessage]] = []
        self._seq = itertools.count()
        self._closing = False

    # -- hub side ---------------------------------------------------------------------------

    def deliver(self, message: DataMessage) -> None:
        """Queue a data message (called by the hub; never blocks)."""
        if self._closing:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.stats.slow_closes += 1
            log.warning("replay.slow_client_closed", connection=self.number)
            self._abort()
            return
        self._queue.put_nowait(message)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, streams: list[str]) -> None:
        """Subscribe to ``streams`` (from the URL), then serve until the socket closes."""
        for name in streams:
            self._subscribe(name)
        log.info(
            "replay.client_connected",
            connection=self.number,
            streams=list(self.subscriptions),
            combined=self.combined,
        )
        tasks = [asyncio.create_task(self._send_loop(), name=f"replay-send-{self.number}")]
        if self.config.max_connection_seconds is not None:
            tasks.append(asyncio.create_task(self._lifetime(), name=f"replay-limit-{self.number}"))
        try:
            await self._read_loop()
        finally:
            self._closing = True
            for name in list(self.subscriptions):
                self.hub.unsubscribe(self, name)
            await cancel_all(*tasks)
            log.info("replay.client_disconnected", connection=self.number, sent=self.sent)

    async def close(self, code: int = 1001, message: bytes = b"") -> None:
        """Close the websocket with a close frame."""
        self._closing = True
        await self.ws.close(code=code, message=message)

    def _abort(self) -> None:
        # An abrupt TCP close, as a network failure looks to the client: no close frame.
        self._closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def _lifetime(self) -> None:
        limit = self.config.max_connection_seconds or 0.0
        if self.config.connection_clock == "wall":
            await asyncio.sleep(limit)
        else:
            await self.clock.sleep_until(self.clock.now_ms() + int(limit * 1000))
        self.stats.limit_closes += 1
        log.info("replay.connection_limit_close", connection=self.number, seconds=limit)
        await self.close(1001, b"connection lifetime limit")

    # -- incoming requests ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                self.stats.requests_received += 1
                self._queue.put_nowait(orjson.dumps(self._handle_request(msg.data)).decode())
            elif msg.type is WSMsgType.ERROR:
                log.info("replay.client_error", connection=self.number, error=str(msg.data))
                break

    def _handle_request(self, text: str) -> dict[str, Any]:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            return ws_error(3, f"Invalid JSON: {e}", None)
        if not isinstance(req, dict):
            return ws_error(2, "Invalid request: expected an object", None)
        req_id = req.get("id")
        if req_id is not None and not (isinstance(req_id, int | str) and req_id != ""):
            return ws_error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = req.get("method")
        if not isinstance(method, str):
            return ws_error(2, "Invalid request: missing field `method`", req_id)
        if method not in WS_METHODS:
            return ws_error(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of "
                + ", ".join(f"`{m}`" for m in WS_METHODS),
                req_id,
            )
        params = req.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str | bool) for p in params):
            return ws_error(2, "Invalid request: params must be a list", req_id)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if any(not isinstance(p, str) or parse_stream(p) is None for p in params):
                return ws_error(2, "Invalid request: invalid stream name", req_id)
            for name in params:
                assert isinstance(name, str)
                if method == "SUBSCRIBE":
                    self._subscribe(name)
                else:
                    self._unsubscribe(name)
            log.info("replay.subscriptions", connection=self.number, method=method, params=params)
            return ws_result(None, req_id)
        if method == "LIST_SUBSCRIPTIONS":
            return ws_result(list(self.subscriptions), req_id)
        if method == "SET_PROPERTY":
            if len(params) == 2 and params[0] == "combined" and isinstance(params[1], bool):
                self.combined = params[1]
                return ws_result(None, req_id)
            return ws_error(0, "Unknown property", req_id)
        if params == ["combined"]:  # GET_PROPERTY
            return ws_result(self.combined, req_id)
        return ws_error(0, "Unknown property", req_id)

    def _subscribe(self, name: str) -> None:
        stream = parse_stream(name)
        if stream is None:
            return
        self.subscriptions[stream.name] = None
        if self.hub.knows(stream.name):
            self.hub.subscribe(self, stream.name)
        else:
            # Binance accepts any well-formed stream and sends nothing for unknown ones.
            log.warning("replay.unknown_stream", connection=self.number, stream=stream.name)

    def _unsubscribe(self, name: str) -> None:
        stream = parse_stream(name)
        if stream is not None:
            self.subscriptions.pop(stream.name, None)
            self.hub.unsubscribe(self, stream.name)

    # -- outgoing ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                timeout = None
                if self._delayed:
                    timeout = max(0.0, self._delayed[0][0] - time.monotonic())
                item: DataMessage | str | None = None
                with contextlib.suppress(TimeoutError):
                    item = await with_timeout(self._queue.get(), timeout)
                while self._delayed and self._delayed[0][0] <= time.monotonic():
                    await self._send_data(heapq.heappop(self._delayed)[2])
                if item is None:
                    continue
                if isinstance(item, str):
                    await self.ws.send_str(item)
                    continue
                if item.stream not in self.subscriptions:
                    continue  # unsubscribed while it was queued
                await self._send_with_faults(item)
        except _Dropped:
            pass
        except ConnectionResetError:
            self._closing = True

    async def _send_with_faults(self, message: DataMessage) -> None:
        plan = self.faults.plan()
        if plan.malformed is not None:
            text = self.faults.malformed_text(
                plan.malformed, message.stream, message.payload, self.combined
            )
            self.stats.malformed_sent += 1
            await self._send_text(text)
        if plan.delay > 0:
            self.stats.delayed += 1
            heapq.heappush(self._delayed, (time.monotonic() + plan.delay, next(self._seq), message))
            return
        await self._send_data(message)
        if plan.duplicate:
            self.stats.duplicates_sent += 1
            await self._send_data(message, count_kind=False)

    async def _send_data(self, message: DataMessage, *, count_kind: bool = True) -> None:
        await self._send_text(message.combined_text if self.combined else message.text)
        if count_kind:
            if message.closed:
                self.stats.finals_sent += 1
            else:
                self.stats.partials_sent += 1

    async def _send_text(self, text: str) -> None:
        if self._closing:
            raise _Dropped
        await self.ws.send_str(text)
        self.sent += 1
        self.stats.messages_sent += 1
        if self.faults.should_drop(self.sent):
            self.stats.drops += 1
            log.info("replay.fault_drop", connection=self.number, sent=self.sent)
            self._abort()
            raise _Dropped
        stall = self.faults.stall_due(self.sent)
        if stall > 0:
            self.stats.stalls += 1
            log.info("replay.fault_stall", connection=self.number, seconds=stall)
            await asyncio.sleep(stall)

"""``/api/stream``: Prediction messages over a WebSocket, resumable from a stream id."""

from __future__ import annotations

import asyncio
import contextlib
import re

import structlog
from fastapi import APIRouter, HTTPException, WebSocket
from fastapi.websockets import WebSocketDisconnect, WebSocketState
from redis.exceptions import RedisError

from core.lifecycle import cancel_all
from core.schemas import Prediction
from web.context import WebContext
from web.routes.series import STREAM_ID
from web.stream import HubUnavailable, StreamOverflow

log = structlog.get_logger(__name__)

# WebSocket close codes (4000-4999 are the application's own).
WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_TRY_AGAIN = 1013
WS_UNAVAILABLE = 1011

router = APIRouter()


@router.websocket("/api/stream")
async def stream(ws: WebSocket) -> None:
    """Prediction messages as JSON text frames; ``?series=`` (repeatable, default all),
    ``?since=<id>`` replays the stream after that id first, then goes live, no gap or repeat."""
    ctx: WebContext = ws.app.state.ctx
    await ws.accept()
    params = ws.query_params
    header = ws.headers.get("authorization")
    if header is None and params.get("token"):
        header = "Bearer " + params["token"]
    if not ctx.authorized(header):
        await ws.close(WS_UNAUTHORIZED, "missing or wrong bearer token")
        return
    try:
        wanted = [ctx.resolve(t) for t in params.getlist("series")] or list(ctx.configured.values())
    except HTTPException as e:
        code = WS_NOT_FOUND if e.status_code == 404 else WS_BAD_REQUEST
        await ws.close(code, str(e.detail)[:120])
        return
    since = params.get("since")
    if since is not None and re.fullmatch(STREAM_ID, since) is None:
        await ws.close(WS_BAD_REQUEST, "since must be a stream id such as 1700000000000-0")
        return
    if ctx.open_streams >= ctx.settings.web.max_streams:
        await ws.close(WS_TRY_AGAIN, "too many streams; retry later")
        return
    ctx.open_streams += 1
    log.info("web.stream.open", series=[s.key for s in wanted], since=since)

    async def send(p: Prediction) -> None:
        await ws.send_text(p.to_json().decode())

    async def until_disconnect() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    pump = asyncio.create_task(ctx.hub.session(wanted, since, send))
    watch = asyncio.create_task(until_disconnect())
    try:
        done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done and (exc := pump.exception()) is not None:
            if isinstance(exc, StreamOverflow):
                await _close(ws, WS_TRY_AGAIN, "too slow; reconnect with since=<last id>")
            elif isinstance(exc, HubUnavailable | RedisError):
                await _close(ws, WS_UNAVAILABLE, "Redis unavailable; reconnect later")
            else:  # the client went away mid-send
                log.info("web.stream.send_failed", error=type(exc).__name__)
    finally:
        await cancel_all(pump, watch)
        ctx.open_streams -= 1
        log.info("web.stream.closed", series=[s.key for s in wanted])


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code, reason)

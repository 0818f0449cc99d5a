"""The read-only HTTP/WebSocket API and the dashboard (``cryptocast web``).

Everything is read through ``storage/``; every query is bounded (``limit`` ≤ 5000 candles or
predictions, forecasts ≤ 1000 steps) and the per-series health, whose hole count reads the whole
history's index, is computed at most once per ``web.status_cache_s`` however many viewers ask.

Series travel in the URL path, percent-encoded or not: ``/api/series/binance:BTC%2FUSDT:1m/latest``
and ``/api/series/binance:BTC/USDT:1m/latest`` name the same series (the route matches the fixed
suffix, so the symbol's ``/`` needs no escaping). A malformed series is a 400, a well-formed one
that is not configured a 404, an out-of-range query parameter a 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.websockets import WebSocketDisconnect, WebSocketState
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from config.settings import Settings, SettingsError
from core.clock import shared_clock
from core.lifecycle import with_timeout
from core.schemas import Prediction
from core.series import SeriesError, SeriesId
from storage.candles import CandleStore
from storage.health import series_health
from storage.keys import Keys
from storage.predictions import PredictionBus
from storage.registry import ModelRegistry
from web.forecast import MAX_STEPS, Forecaster, ForecastUnavailable
from web.stream import HubUnavailable, PredictionHub, StreamOverflow

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_LIMIT = 5000
STREAM_ID = r"^\d{1,15}(-\d{1,15})?$"

# WebSocket close codes (4000-4999 are the application's own).
WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_TRY_AGAIN = 1013
WS_UNAVAILABLE = 1011


class CandleOut(BaseModel):
    """One closed candle (prices in the quote currency, times UTC epoch ms)."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None


class CandlePage(BaseModel):
    series: str
    candles: list[CandleOut]
    next_since: int | None = Field(
        description="Pass as ``since`` for the next page; null when this page reaches the newest "
        "stored candle"
    )


class PredictionPage(BaseModel):
    series: str
    predictions: list[Prediction]
    next_since: str | None = Field(
        description="Pass as ``since`` for the next page; null when there is nothing newer"
    )


class SeriesOut(BaseModel):
    series: str
    exchange: str
    symbol: str
    timeframe: str
    path: str = Field(description="The series percent-encoded for use in URLs")


class ForecastPoint(BaseModel):
    time: int
    predicted_close: float
    predicted_return: float
    lower: float
    upper: float


class ForecastOut(BaseModel):
    series: str
    model: dict[str, Any]
    as_of: int
    last_close: float
    steps: int
    interval_level: float
    points: list[ForecastPoint]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``127.0.0.0/8``, ``::1``, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to serve beyond localhost without a token (raises :class:`SettingsError`)."""
    token = settings.web.token
    if not is_loopback(host) and (token is None or not token.get_secret_value()):
        raise SettingsError(
            f"CRYPTOCAST_WEB__TOKEN must be set to serve the web API beyond localhost "
            f"(CRYPTOCAST_WEB__HOST / --host is {host!r})"
        )


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def _authorized(token: str | None, header: str | None) -> bool:
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())


async def _require_token(request: Request) -> None:
    if not _authorized(request.app.state.token, request.headers.get("authorization")):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def _resolve(configured: dict[str, SeriesId], text: str) -> SeriesId:
    try:
        series = SeriesId.parse(text)
    except SeriesError as e:
        why = str(e) if str(e).startswith("bad series") else f"bad series {text!r}: {e}"
        raise HTTPException(400, why) from None
    if series.key not in configured:
        raise HTTPException(404, f"series {series.key!r} is not served here (see /api/series)")
    return configured[series.key]


async def _series_dep(
    request: Request,
    series: Annotated[
        str,
        PathParam(
            description="exchange:symbol:timeframe, e.g. binance:BTC/USDT:1m "
            "(the / may be sent as %2F)"
        ),
    ],
) -> SeriesId:
    return _resolve(request.app.state.configured, series)


Series = Annotated[SeriesId, Depends(_series_dep)]


class _StatusCache:
    """Per-series health, recomputed at most every ``ttl_s`` (one computation in flight)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._at: dict[str, float] = {}
        self._value: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, compute: Any) -> dict[str, Any]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            at = self._at.get(key)
            if at is None or time.monotonic() - at >= self.ttl_s:
                self._value[key] = await compute()
                self._at[key] = time.monotonic()
            return self._value[key]


def create_app(settings: Settings, redis: Any) -> FastAPI:
    """The web app over an open Redis client (the caller owns and closes it)."""
    keys = Keys(settings.key_prefix)
    store = CandleStore(
        redis, keys, retention=settings.retention, event_stream_len=settings.event_stream_len
    )
    bus = PredictionBus(redis, keys, settings.prediction_stream_len)
    configured = {s.key: s for s in settings.series_ids}
    hub = PredictionHub(redis, bus, list(configured.values()))
    forecaster = Forecaster(ModelRegistry(redis, keys), store)
    status_cache = _StatusCache(settings.web.status_cache_s)
    token = settings.web.token.get_secret_value() if settings.web.token else None
    streams = {"open": 0}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        log.info("web.started", series=list(configured))
        try:
            yield
        finally:
            await hub.stop()
            log.info("web.stopped")

    app = FastAPI(
        title="cryptocast",
        summary="Read-only API over the predictions cryptocast publishes, and a live dashboard.",
        description=(
            "Series go in the path, with or without percent-encoding of the symbol's `/`: "
            "`/api/series/binance:BTC%2FUSDT:1m/latest`. When a token is configured every "
            "`/api` route needs `Authorization: Bearer <token>` (the WebSocket also takes "
            "`?token=`). WebSocket `/api/stream?series=S&since=<id>` sends one Prediction JSON "
            "per text frame, the same message as the Redis channel."
        ),
        version="1",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.forecaster = forecaster

    app.state.token = token
    app.state.configured = configured

    def authorized(header: str | None) -> bool:
        return _authorized(token, header)

    def resolve(text: str) -> SeriesId:
        return _resolve(configured, text)

    api = [Depends(_require_token)]

    @app.exception_handler(RedisError)
    async def _redis_down(_request: Request, exc: RedisError) -> Response:
        log.warning("web.redis_error", error=str(exc).splitlines()[0] if str(exc) else "")
        return _json({"detail": "Redis is unavailable"}, 503)

    async def health(series: SeriesId) -> dict[str, Any]:
        async def compute() -> dict[str, Any]:
            clock = await shared_clock(redis, keys.clock(), settings.clock)
            return await series_health(redis, store, series, clock, settings.schedule.stale_after)

        return await status_cache.get(series.key, compute)

    # routes ------------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Liveness and Redis reachability (no token needed): 200, or 503 when Redis is down."""
        try:
            await with_timeout(redis.ping(), 2.0)
        except (RedisError, OSError, TimeoutError):
            return _json({"ok": False, "redis": "unreachable"}, 503)
        return _json({"ok": True, "redis": "ok", "stream_ready": hub.ready.is_set()})

    @app.get("/api/series", response_model=list[SeriesOut], dependencies=api, tags=["series"])
    async def list_series() -> Response:
        """The configured series."""
        return _json(
            [
                {
                    "series": s.key,
                    "exchange": s.exchange,
                    "symbol": s.symbol,
                    "timeframe": s.timeframe.text,
                    "path": quote(s.key, safe=":"),
                }
                for s in configured.values()
            ]
        )

    @app.get(
        "/api/series/{series:path}/candles",
        response_model=CandlePage,
        dependencies=api,
        tags=["series"],
    )
    async def candles(
        series: Series,
        since: Annotated[
            int | None,
            Query(ge=0, description="First open time (UTC ms); default: the newest `limit`"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
    ) -> Response:
        """Closed candles, oldest first: the newest ``limit``, or ``limit`` candle slots from
        ``since`` (fewer items where the history has holes; follow ``next_since``)."""
        tf = series.timeframe
        last = await store.last_open_time(series)
        if since is None:
            rows = await store.last(series, limit)
            nxt = None
        else:
            first = tf.floor_index(since) + (0 if tf.is_aligned(since) else 1)
            end = tf.open_time(first + limit - 1)
            rows = await store.range(series, tf.open_time(first), end)
            nxt = tf.open_time(first + limit) if last is not None and end < last else None
        return _json(
            {"series": series.key, "candles": [c.to_dict() for c in rows], "next_since": nxt}
        )

    @app.get(
        "/api/series/{series:path}/predictions",
        response_model=PredictionPage,
        dependencies=api,
        tags=["predictions"],
    )
    async def predictions(
        series: Series,
        since: Annotated[
            str | None,
            Query(
                pattern=STREAM_ID,
                description="Stream id (or as_of ms) to read after, exclusive; default: the "
                "newest `limit`",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
    ) -> Response:
        """Published predictions from the prediction stream, oldest first."""
        if since is None:
            items = await bus.recent(series, limit)
            nxt = None
        else:
            items = await bus.since(series, since, count=limit)
            nxt = items[-1].id if len(items) == limit else None
        return _json(
            {
                "series": series.key,
                "predictions": [p.model_dump(by_alias=True) for p in items],
                "next_since": nxt,
            }
        )

    @app.get(
        "/api/series/{series:path}/latest",
        response_model=Prediction,
        dependencies=api,
        tags=["predictions"],
        responses={404: {"description": "Unknown series, or nothing published yet"}},
    )
    async def latest(series: Series) -> Response:
        """The latest Prediction message of the series."""
        p = await bus.latest(series)
        if p is None:
            raise HTTPException(404, f"no prediction published for {series.key} yet")
        return Response(p.to_json(), media_type="application/json")

    @app.get(
        "/api/series/{series:path}/forecast",
        response_model=ForecastOut,
        dependencies=api,
        tags=["predictions"],
        responses={409: {"description": "No model yet, or too few contiguous candles"}},
    )
    async def forecast(
        series: Series,
        steps: Annotated[
            int | None, Query(ge=1, le=MAX_STEPS, description="Candles ahead (default 60)")
        ] = None,
        until: Annotated[
            int | None,
            Query(ge=0, description="Forecast up to this open time (UTC ms) instead of `steps`"),
        ] = None,
    ) -> Response:
        """A multi-step forecast from the current model, each predicted return fed back as the
        next input (recursive); intervals widen as √k. Computed once per candle and model."""
        n = steps if steps is not None else 60
        if until is not None:
            if steps is not None:
                raise HTTPException(422, "give steps or until, not both")
            last = await store.last_open_time(series)
            if last is None:
                raise HTTPException(409, f"no candles stored for {series.key} yet")
            tf = series.timeframe
            n = tf.floor_index(until) - tf.floor_index(last)
            if not 1 <= n <= MAX_STEPS:
                raise HTTPException(
                    422, f"until must be 1..{MAX_STEPS} candles after the newest ({last})"
                )
        try:
            return _json(await forecaster.forecast(series, n))
        except ForecastUnavailable as e:
            raise HTTPException(409, str(e)) from None

    @app.get("/api/status", dependencies=api, tags=["ops"])
    async def status() -> Response:
        """Per-series health, as ``cryptocast status --json`` reports it (cached a few seconds),
        plus ``stream_clients``."""
        report = [await health(s) for s in configured.values()]
        return _json({"series": report, "stream_clients": hub.clients})

    @app.websocket("/api/stream")
    async def stream(ws: WebSocket) -> None:
        """Prediction messages as JSON text frames; ``?series=`` (repeatable, default all),
        ``?since=<id>`` replays the stream after that id first, then goes live, no gap or
        repeat."""
        await ws.accept()
        params = ws.query_params
        header = ws.headers.get("authorization")
        if header is None and params.get("token"):
            header = "Bearer " + params["token"]
        if not authorized(header):
            await ws.close(WS_UNAUTHORIZED, "missing or wrong bearer token")
            return
        try:
            wanted = [resolve(t) for t in params.getlist("series")] or list(configured.values())
        except HTTPException as e:
            code = WS_NOT_FOUND if e.status_code == 404 else WS_BAD_REQUEST
            await ws.close(code, str(e.detail)[:120])
            return
        since = params.get("since")
        if since is not None and not _valid_id(since):
            await ws.close(WS_BAD_REQUEST, "since must be a stream id such as 1700000000000-0")
            return
        if streams["open"] >= settings.web.max_streams:
            await ws.close(WS_TRY_AGAIN, "too many streams; retry later")
            return
        streams["open"] += 1
        log.info("web.stream.open", series=[s.key for s in wanted], since=since)

        async def send(p: Prediction) -> None:
            await ws.send_text(p.to_json().decode())

        async def until_disconnect() -> None:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass

        pump = asyncio.create_task(hub.session(wanted, since, send))
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
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            streams["open"] -= 1
            log.info("web.stream.closed", series=[s.key for s in wanted])

    # dashboard ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                "style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:",
                "Cache-Control": "no-cache",
            },
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return app


def _valid_id(text: str) -> bool:
    import re

    return re.fullmatch(STREAM_ID, text) is not None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code, reason)

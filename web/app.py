"""The read-only HTTP/WebSocket API and the dashboard (``cryptocast web``).

Everything is read through ``storage/``; every query is bounded (``limit`` ≤ 5000 candles or
predictions; a forecast is a slice of the path the forecaster stores) and the per-series health,
whose hole count reads the whole history's index, is computed at most once per
``web.status_cache_s`` however many viewers ask. The routes live in :mod:`web.routes` (one
router per subject) and return the models of :mod:`web.models`, against which FastAPI checks
every response.

Series travel in the URL path, percent-encoded or not: ``/api/series/binance:BTC%2FUSDT:1m/latest``
and ``/api/series/binance:BTC/USDT:1m/latest`` name the same series (the route matches the fixed
suffix, so the symbol's ``/`` needs no escaping). A malformed series is a 400, a well-formed one
that is not configured a 404, an out-of-range query parameter a 422.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError

from config.settings import Settings, SettingsError
from web.context import WebContext
from web.routes import ops, series, stream

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws: wss:"
)


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


def create_app(settings: Settings, redis: Any) -> FastAPI:
    """The web app over an open Redis client (the caller owns and closes it)."""
    ctx = WebContext.build(settings, redis)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ctx.hub.start()
        log.info("web.started", series=list(ctx.configured))
        try:
            yield
        finally:
            await ctx.hub.stop()
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
    app.state.ctx = ctx
    app.state.hub = ctx.hub
    for module in (ops, series, stream):
        app.include_router(module.router)

    @app.exception_handler(RedisError)
    async def _redis_down(_request: Request, exc: RedisError) -> Response:
        log.warning("web.redis_error", error=str(exc).splitlines()[0] if str(exc) else "")
        return JSONResponse({"detail": "Redis is unavailable"}, 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return app

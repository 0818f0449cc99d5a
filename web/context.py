"""What every route needs, built once per app: the process's storage (one facade over one Redis
client), the configured series, the token, the stream hub, the stored forecast paths and the
status cache. Routes get it (and the resolved series, and the token check) through FastAPI
dependencies."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam

from config.settings import Settings
from core.clock import shared_clock
from core.series import SeriesError, SeriesId
from storage.facade import Storage
from storage.health import series_health
from web.forecast import PathReader
from web.stream import PredictionHub


class StatusCache:
    """Per-series health, recomputed at most every ``ttl_s`` (one computation in flight), so
    dashboards never add Redis load in proportion to viewers."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._at: dict[str, float] = {}
        self._value: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(
        self, key: str, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            at = self._at.get(key)
            if at is None or time.monotonic() - at >= self.ttl_s:
                self._value[key] = await compute()
                self._at[key] = time.monotonic()
            return self._value[key]


@dataclass
class WebContext:
    """The app's shared objects (``app.state.ctx``)."""

    settings: Settings
    storage: Storage
    hub: PredictionHub
    forecasts: PathReader
    configured: dict[str, SeriesId]
    token: str | None
    status_cache: StatusCache
    open_streams: int = field(default=0)

    @classmethod
    def build(cls, settings: Settings, redis: Any) -> WebContext:
        storage = Storage.from_settings(redis, settings)
        configured = {s.key: s for s in settings.series_ids}
        return cls(
            settings=settings,
            storage=storage,
            hub=PredictionHub(redis, storage.predictions, list(configured.values())),
            forecasts=PathReader(storage.paths),
            configured=configured,
            token=settings.web.token.get_secret_value() if settings.web.token else None,
            status_cache=StatusCache(settings.web.status_cache_s),
        )

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (always, when none is set)."""
        if self.token is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header.removeprefix("Bearer ").encode(), self.token.encode())

    def resolve(self, text: str) -> SeriesId:
        """A configured series from its text: 400 when malformed, 404 when not served here."""
        try:
            series = SeriesId.parse(text)
        except SeriesError as e:
            why = str(e) if str(e).startswith("bad series") else f"bad series {text!r}: {e}"
            raise HTTPException(400, why) from None
        if series.key not in self.configured:
            raise HTTPException(404, f"series {series.key!r} is not served here (see /api/series)")
        return self.configured[series.key]

    async def health(self, series: SeriesId) -> dict[str, Any]:
        """``status --json``'s entry for ``series``, through the cache."""

        async def compute() -> dict[str, Any]:
            storage, s = self.storage, self.settings
            clock = await shared_clock(storage.redis, storage.keys.clock(), s.clock)
            return await series_health(
                storage, series, clock, s.schedule.stale_after, scope=s.model.scope
            )

        return await self.status_cache.get(series.key, compute)


def get_context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


Context = Annotated[WebContext, Depends(get_context)]


async def require_token(request: Request) -> None:
    """The bearer-token check of every ``/api`` route."""
    if not get_context(request).authorized(request.headers.get("authorization")):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


async def _series_dep(
    ctx: Context,
    series: Annotated[
        str,
        PathParam(
            description="exchange:symbol:timeframe, e.g. binance:BTC/USDT:1m "
            "(the / may be sent as %2F)"
        ),
    ],
) -> SeriesId:
    return ctx.resolve(series)


Series = Annotated[SeriesId, Depends(_series_dep)]

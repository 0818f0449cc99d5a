"""Operations: liveness (no token) and per-series health."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from core.lifecycle import with_timeout
from web.context import Context, require_token
from web.models import HealthOut, StatusOut

router = APIRouter(tags=["ops"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses={503: {"model": HealthOut, "description": "Redis is down"}},
)
async def healthz(ctx: Context) -> HealthOut | JSONResponse:
    """Liveness and Redis reachability (no token needed): 200, or 503 when Redis is down."""
    try:
        await with_timeout(ctx.storage.redis.ping(), 2.0)
    except (RedisError, OSError, TimeoutError):
        down = HealthOut(ok=False, redis="unreachable")
        return JSONResponse(down.model_dump(exclude_none=True), 503)
    return HealthOut(ok=True, redis="ok", stream_ready=ctx.hub.ready.is_set())


@router.get("/api/status", dependencies=[Depends(require_token)])
async def status(ctx: Context) -> StatusOut:
    """Per-series health, as ``cryptocast status --json`` reports it (cached a few seconds),
    plus ``stream_clients``."""
    report = [await ctx.health(s) for s in ctx.configured.values()]
    return StatusOut(series=report, stream_clients=ctx.hub.clients)

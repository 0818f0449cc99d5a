"""Connecting to Redis (standalone or Cluster) with a clear error when it is not there."""

from __future__ import annotations

import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from config.settings import Settings, mask_url
from core.lifecycle import with_timeout

# Both clients speak the same command API; scripts and pipelines work on either because every
# multi-key command of ours stays inside one series' hash tag.
Redis = aioredis.Redis | RedisCluster


class RedisUnavailable(RuntimeError):
    """Redis could not be reached or refused us; the message names the (masked) URL."""


def create_client(settings: Settings, *, timeout_s: float = 5.0) -> Redis:
    """A client for ``settings.redis_url`` (not yet connected: see :func:`connect`)."""
    url = settings.redis_url.get_secret_value()
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout_s,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "decode_responses": False,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
        # On a Cluster a forecaster holds one blocking XREADGROUP per served series, plus its
        # publishes (standalone: one read for all, forecaster/serving/fanin.py): redis-py's
        # default pool of 100 refused connections ("Too many connections") at 100 series
        # (bench/latency_bench.py). Sized by the series configured, with room to spare.
        "max_connections": max(100, 3 * len(settings.series) + 64),
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_cluster:
        kwargs.pop("health_check_interval")
        # No socket timeout, as on the standalone client (keepalive finds dead peers): with
        # one, redis-py sends through asyncio.wait_for, which on Python 3.11 can swallow a
        # task's cancellation, so a stopped forecaster worker went on serving (cluster test).
        kwargs["socket_timeout"] = None
        return RedisCluster.from_url(url, **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


async def connect(settings: Settings, *, timeout_s: float = 5.0) -> Redis:
    """Connect and PING once; raise :class:`RedisUnavailable` (one line) on failure."""
    client = create_client(settings, timeout_s=timeout_s)
    try:
        await with_timeout(client.ping(), timeout_s * 2)
    except (RedisError, OSError, TimeoutError) as e:
        await close_quietly(client)
        raise RedisUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url.get_secret_value())}: "
            f"{_reason(e)} (set CRYPTOCAST_REDIS_URL)"
        ) from None
    return client


async def close_quietly(client: Redis) -> None:
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]

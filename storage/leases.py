"""Leases: a Redis key with a TTL naming its holder, so one replica does one job at a time.

Used to split series between forecaster replicas (role ``serve``) and to keep two trainings of one
series from running at once (role ``train``). Renewal and release check the holder atomically so
a replica that lost its lease (paused past the TTL) never deletes another's.
"""

from __future__ import annotations

from typing import Any

from core.series import SeriesId
from storage.keys import Keys

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    """Acquire, renew and release named leases per series."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, series: SeriesId, role: str, owner: str, ttl_ms: int) -> bool:
        """Take the lease if free (or already ours, which renews it)."""
        key = self.keys.lease(series, role)
        if await self.redis.set(key, owner, nx=True, px=ttl_ms):
            return True
        return await self.renew(series, role, owner, ttl_ms)

    async def renew(self, series: SeriesId, role: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[self.keys.lease(series, role)], args=[owner, ttl_ms]))

    async def release(self, series: SeriesId, role: str, owner: str) -> bool:
        return bool(await self._release(keys=[self.keys.lease(series, role)], args=[owner]))

    async def holder(self, series: SeriesId, role: str) -> str | None:
        raw = await self.redis.get(self.keys.lease(series, role))
        return None if raw is None else raw.decode()


class Replicas:
    """Which replicas of a role are alive: each heartbeats into one sorted set, so every replica
    can compute its fair share of the series (see forecaster.serving.service)."""

    def __init__(self, redis: Any, keys: Keys, role: str = "forecast") -> None:
        self.redis = redis
        self.key = keys.replicas(role)

    async def heartbeat(self, replica: str, now_ms: int) -> None:
        await self.redis.zadd(self.key, {replica: now_ms})

    async def live(self, now_ms: int, ttl_ms: int) -> int:
        """Replicas seen within ``ttl_ms`` (forgetting older ones)."""
        await self.redis.zremrangebyscore(self.key, "-inf", now_ms - ttl_ms)
        return int(await self.redis.zcard(self.key))

    async def leave(self, replica: str) -> None:
        await self.redis.zrem(self.key, replica)

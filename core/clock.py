"""The one clock services read "now" from (docs/architecture.md, "Clock").

``wall``: the machine's clock. ``exchange``: the exchange's server time, extrapolated from the
last sync as ``server_ms + (wall_now - wall_at_sync) * speed``; ``speed`` is 1 for a real exchange
and the replay factor for the local replay exchange (it reports it beside ``serverTime``). Ingest
syncs against the exchange and shares the reading in Redis so the forecaster and ``status``,
which never talk to the exchange, judge staleness on the same clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    """The machine's UTC clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class ClockSync:
    """The exchange showed ``server_ms`` at our ``wall_ms``; its clock runs at ``speed``."""

    server_ms: int
    wall_ms: int
    speed: float = 1.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"server_ms": self.server_ms, "wall_ms": self.wall_ms, "speed": self.speed}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ClockSync:
        d = orjson.loads(raw)
        return cls(int(d["server_ms"]), int(d["wall_ms"]), float(d.get("speed", 1.0)))


class ExchangeClock:
    """The exchange's clock, extrapolated from the latest :class:`ClockSync`."""

    def __init__(self, sync: ClockSync | None = None) -> None:
        self.sync = sync

    def update(self, sync: ClockSync) -> None:
        self.sync = sync

    def now_ms(self) -> int:
        wall = time.time_ns() // 1_000_000
        if self.sync is None:
            return wall
        return self.sync.server_ms + int((wall - self.sync.wall_ms) * self.sync.speed)


async def shared_clock(redis: Any, key: str, kind: str) -> Clock:
    """The clock for a service that does not talk to the exchange itself.

    The exchange clock whenever ingest published a reading (it does when it runs on the exchange
    clock, and removes it when it runs on the wall clock), whatever ``kind`` says: a ``status``
    typed in a second terminal, configured for the wall clock, must judge a replay running on
    exchange time by that time, as the services do. Without a reading: ``kind``'s clock.
    """
    raw = await redis.get(key)
    if raw:
        return ExchangeClock(ClockSync.from_json(raw))
    return ExchangeClock() if kind == "exchange" else WallClock()

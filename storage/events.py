"""Closed-candle events: one capped stream per series, read through a consumer group.

The candle store appends an event for every new or revised closed candle in the same script
that stores it. Consumers acknowledge an event after handling it (the forecaster: after the
prediction is published), so a consumer that dies leaves it pending; :meth:`CandleEvents.claim`
hands such entries to a live consumer (docs/architecture.md, decision 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from core.schemas import Candle
from core.series import SeriesId
from storage.codec import unpack_candle
from storage.keys import Keys

DEFAULT_GROUP = "forecaster"


@dataclass(frozen=True, slots=True)
class CandleEvent:
    """A closed candle as announced by ingest."""

    id: str
    series: SeriesId
    candle: Candle
    arrived_ms: int
    revised: bool


class CandleEvents:
    """Reading and acknowledging the closed-candle event streams."""

    def __init__(self, redis: Any, keys: Keys, group: str = DEFAULT_GROUP) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group

    async def ensure_group(self, series: SeriesId, start_id: str = "0") -> None:
        """Create the consumer group (and the stream) if missing; idempotent."""
        try:
            await self.redis.xgroup_create(
                self.keys.events(series), self.group, start_id, mkstream=True
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(
        self,
        series: SeriesId,
        consumer: str,
        *,
        count: int = 100,
        block_ms: int | None = 1000,
        pending: bool = False,
    ) -> list[CandleEvent]:
        """New events for ``consumer`` (or, with ``pending``, its own unacknowledged ones)."""
        start = "0" if pending else ">"
        reply = await self.redis.xreadgroup(
            self.group,
            consumer,
            {self.keys.events(series): start},
            count=count,
            block=None if pending else block_ms,
        )
        return self._decode(series, reply)

    async def read_many(
        self,
        after: dict[SeriesId, str],
        consumer: str,
        *,
        count: int = 100,
        block_ms: int | None = 1000,
    ) -> dict[SeriesId, list[CandleEvent]]:
        """:meth:`read` for several series in one XREADGROUP: ``after`` maps each series to
        ``">"`` (new events) or an id (its own pending events after that id; no blocking then).
        Standalone Redis only: on a Cluster the series' streams live in different slots.
        ``count`` applies to each stream."""
        by_key = {self.keys.events(s): s for s in after}
        reply = await self.redis.xreadgroup(
            self.group,
            consumer,
            {self.keys.events(s): start for s, start in after.items()},
            count=count,
            block=block_ms if all(v == ">" for v in after.values()) else None,
        )
        out: dict[SeriesId, list[CandleEvent]] = {}
        for stream, entries in _streams(reply):
            series = by_key[stream.decode() if isinstance(stream, bytes) else str(stream)]
            got = [self._event(series, eid, fields) for eid, fields in entries if fields]
            if got:
                out[series] = got
        return out

    async def claim(
        self, series: SeriesId, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[CandleEvent]:
        """Take over events pending longer than ``min_idle_ms`` from dead consumers."""
        reply = await self.redis.xautoclaim(
            self.keys.events(series),
            self.group,
            consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        return [self._event(series, eid, fields) for eid, fields in reply[1] if fields]

    async def ack(self, series: SeriesId, *ids: str) -> int:
        if not ids:
            return 0
        return int(await self.redis.xack(self.keys.events(series), self.group, *ids))

    async def pending_count(self, series: SeriesId) -> int:
        try:
            info = await self.redis.xpending(self.keys.events(series), self.group)
        except ResponseError:
            return 0
        return int(info["pending"])

    async def length(self, series: SeriesId) -> int:
        return int(await self.redis.xlen(self.keys.events(series)))

    def _decode(self, series: SeriesId, reply: Any) -> list[CandleEvent]:
        out: list[CandleEvent] = []
        for _stream, entries in reply or []:
            out += [self._event(series, eid, fields) for eid, fields in entries if fields]
        return out

    @staticmethod
    def _event(series: SeriesId, eid: Any, fields: dict[bytes, bytes]) -> CandleEvent:
        eid = eid.decode() if isinstance(eid, bytes) else str(eid)
        return CandleEvent(
            id=eid,
            series=series,
            candle=unpack_candle(series.timeframe.open_time(int(fields[b"i"])), fields[b"c"]),
            arrived_ms=int(fields[b"a"]),
            revised=fields.get(b"r") == b"1",
        )


def _streams(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply as (stream, entries) pairs: RESP3 gives a map, RESP2 a list."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else [tuple(r) for r in reply]

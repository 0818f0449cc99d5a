"""Live kline streams: one feed task per replayed stream, fanning messages out to subscribers."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog

from core.lifecycle import cancel_all
from replay.history import ReplayClock, SymbolHistory
from replay.protocol import combined, kline_payload

if TYPE_CHECKING:
    from collections.abc import Iterable

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ReplayStats:
    """Counters of everything the replay exchange did; served at ``/_replay/stats``."""

    connections_accepted: int = 0
    connections_open: int = 0
    messages_sent: int = 0
    """Data messages written to websockets (good, malformed and duplicated ones)."""
    finals_sent: int = 0
    partials_sent: int = 0
    malformed_sent: int = 0
    duplicates_sent: int = 0
    delayed: int = 0
    stalls: int = 0
    drops: int = 0
    """Connections aborted by the ``drop_after`` fault."""
    limit_closes: int = 0
    """Connections closed by the ``max_connection_seconds`` limit."""
    slow_closes: int = 0
    """Connections closed because their send queue overflowed."""
    requests_received: int = 0
    rest_calls: int = 0
    rest_kline_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataMessage:
    """One kline event, serialised once for all raw subscribers and once for combined ones."""

    __slots__ = ("_combined_text", "closed", "payload", "stream", "text")

    def __init__(self, stream: str, payload: dict[str, Any], closed: bool) -> None:
        self.stream = stream
        self.payload = payload
        self.closed = closed
        self.text = orjson.dumps(payload).decode()
        self._combined_text: str | None = None

    @property
    def combined_text(self) -> str:
        if self._combined_text is None:
            self._combined_text = orjson.dumps(combined(self.stream, self.payload)).decode()
        return self._combined_text


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    def deliver(self, message: DataMessage) -> None: ...


class StreamHub:
    """Runs a feed task per replayed stream that has (had) subscribers."""

    def __init__(
        self,
        histories: Iterable[SymbolHistory],
        clock: ReplayClock,
        updates_per_candle: int,
    ) -> None:
        self.histories = {h.stream_name: h for h in histories}
        self.clock = clock
        self.updates = updates_per_candle
        self._subscribers: dict[str, set[Subscriber]] = {name: set() for name in self.histories}
        self._wakeups: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.histories}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.ended: set[str] = set()

    def knows(self, stream: str) -> bool:
        return stream in self.histories

    def subscribe(self, sub: Subscriber, stream: str) -> None:
        if stream not in self.histories:
            return
        self._subscribers[stream].add(sub)
        self._wakeups[stream].set()
        if stream not in self._tasks:
            self._tasks[stream] = asyncio.create_task(
                self._feed(self.histories[stream]), name=f"replay-feed-{stream}"
            )

    def unsubscribe(self, sub: Subscriber, stream: str) -> None:
        subs = self._subscribers.get(stream)
        if subs is not None:
            subs.discard(sub)

    async def close(self) -> None:
        """Cancel and await every feed task."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_all(*tasks)

    async def _wait_for_subscribers(self, stream: str) -> None:
        wake = self._wakeups[stream]
        while not self._subscribers[stream]:
            wake.clear()
            await wake.wait()

    async def _feed(self, h: SymbolHistory) -> None:
        stream, symbol, interval = h.stream_name, h.symbol, h.timeframe.text
        subs = self._subscribers[stream]
        clock = self.clock
        steps = self.updates + 1
        i = -1
        while True:
            if i < 0 or not subs:
                await self._wait_for_subscribers(stream)
                now = clock.now_ms()
                # (Re)start at the candle in progress; finals that passed unheard are for REST.
                first = h.index_containing(now)
                if first < 0 or now > h.close_times[first]:
                    first += 1
                i = max(i + 1, first)
            else:
                i += 1  # subscribers were listening: never skip a final, however far behind
            if i >= len(h):
                self.ended.add(stream)
                log.info("replay.stream_ended", stream=stream)
                return
            open_t, close_t = h.open_times[i], h.close_times[i]
            span = close_t + 1 - open_t
            events = [open_t + span * k // steps for k in range(1, steps)]
            for n, at in enumerate(events):
                next_at = events[n + 1] if n + 1 < len(events) else close_t + 1
                if clock.now_ms() >= next_at:
                    continue  # behind schedule (high speed or a jump): skip stale partials
                await clock.sleep_until(at)
                if clock.now_ms() >= next_at:
                    continue
                payload = kline_payload(symbol, interval, h.kline(i, at), clock.now_ms())
                self._publish(subs, DataMessage(stream, payload, False))
            await clock.sleep_until(close_t + 1)
            payload = kline_payload(symbol, interval, h.kline(i, close_t + 1), clock.now_ms())
            self._publish(subs, DataMessage(stream, payload, True))

    @staticmethod
    def _publish(subs: set[Subscriber], message: DataMessage) -> None:
        for sub in list(subs):
            sub.deliver(message)

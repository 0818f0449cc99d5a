"""Streaming Prediction messages to many clients, resumable from a stream id, with no gap.

The prediction *stream* is the source of truth; the pub/sub channel is only a doorbell. One
:class:`PredictionHub` per web process subscribes to the channels of every configured series and,
on each message (and every ``poll_s`` in case a message was missed, e.g. while Redis restarted),
reads the stream forward from the last entry it dispatched. So every client sees every entry, in
stream order, whatever happened to the pub/sub connection, and Redis serves one subscriber and
one short XRANGE per prediction however many clients are connected.

A client that resumes from an id (:meth:`PredictionHub.session`) registers with the hub *first*,
then replays the stream after its id, then takes the live entries the hub queued meanwhile,
dropping those it already sent (stream ids grow with ``as_of``, so "already sent" is "not newer
than the last ``as_of`` sent"). Entries published while it replayed are in its queue; entries
published before it registered are in the stream: nothing falls between the two.

A client that reads too slowly has a bounded queue; when it fills, the session ends with
:class:`StreamOverflow` and the client reconnects from the last id it got.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import structlog
from redis.exceptions import RedisError

from core.backoff import Backoff
from core.lifecycle import cancel_and_wait, with_timeout
from core.schemas import Prediction
from core.series import SeriesId
from storage.predictions import PredictionBus

log = structlog.get_logger(__name__)

# Entries per XRANGE: bounds one Redis call, whatever the backlog.
PAGE = 500


class StreamOverflow(RuntimeError):
    """A client fell more than its queue behind; it must reconnect with ``since``."""


class HubUnavailable(RuntimeError):
    """The hub has not reached Redis yet."""


class Subscription:
    """One client's queue of live predictions (bounded; see :class:`StreamOverflow`)."""

    def __init__(self, series: Iterable[str], limit: int) -> None:
        self.series = frozenset(series)
        self.limit = limit
        self.overflowed = False
        self._items: deque[Prediction] = deque()
        self._wake = asyncio.Event()

    def push(self, p: Prediction) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self.limit:
            self.overflowed = True
        else:
            self._items.append(p)
        self._wake.set()

    async def get(self) -> Prediction:
        while True:
            if self.overflowed:
                raise StreamOverflow(f"client fell more than {self.limit} predictions behind")
            if self._items:
                return self._items.popleft()
            self._wake.clear()
            await self._wake.wait()


class PredictionHub:
    """One shared subscription fanning predictions out to every connected client."""

    def __init__(
        self,
        redis: Any,
        bus: PredictionBus,
        series: list[SeriesId],
        *,
        queue_limit: int = 10_000,
        poll_s: float = 2.0,
    ) -> None:
        self.redis = redis
        self.bus = bus
        self.series = {s.key: s for s in series}
        self.queue_limit = queue_limit
        self.poll_s = poll_s
        self.ready = asyncio.Event()
        self._last: dict[str, str | None] = {}
        self._locks = {k: asyncio.Lock() for k in self.series}
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def clients(self) -> int:
        return len(self._subs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-hub")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    # the shared subscription -----------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._session(backoff)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                delay = backoff.next_delay()
                log.warning(
                    "web.hub.disconnected", error=str(e).splitlines()[0], retry_s=round(delay, 2)
                )
                await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        pubsub = self.redis.pubsub()
        channels = {self.bus.keys.predictions(s): key for key, s in self.series.items()}
        try:
            await pubsub.subscribe(*channels)
            backoff.reset()  # connected again: the next outage starts from the shortest delay
            if not self.ready.is_set():
                # Start from what exists now: clients replay older entries themselves.
                for key, s in self.series.items():
                    newest = await self.bus.recent(s, 1)
                    self._last[key] = newest[-1].id if newest else None
                self.ready.set()
                log.info("web.hub.ready", series=len(self.series))
            else:
                await self._fill_all()  # whatever was published while we were away
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                if msg is None:
                    await self._fill_all()
                elif msg.get("type") == "message":
                    channel = msg["channel"]
                    hit = channels.get(channel.decode() if isinstance(channel, bytes) else channel)
                    if hit is not None:
                        await self._fill(hit)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _fill_all(self) -> None:
        for key in self.series:
            await self._fill(key)

    async def _fill(self, key: str) -> None:
        """Dispatch every stream entry after the last one dispatched, in order."""
        async with self._locks[key]:
            while True:
                page = await self.bus.since(self.series[key], self._last.get(key), count=PAGE)
                for p in page:
                    for sub in self._subs:
                        if key in sub.series:
                            sub.push(p)
                if page:
                    self._last[key] = page[-1].id
                if len(page) < PAGE:
                    return

    # clients -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def subscribe(self, series: Iterable[SeriesId]) -> AsyncIterator[Subscription]:
        """Register a client queue for ``series`` (live entries from now on)."""
        sub = Subscription((s.key for s in series), self.queue_limit)
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    async def session(
        self,
        series: list[SeriesId],
        since: str | None,
        send: Callable[[Prediction], Awaitable[None]],
        *,
        ready_timeout_s: float = 10.0,
    ) -> None:
        """Send every prediction of ``series`` after stream id ``since`` (all live ones when
        ``since`` is None) to ``send``, in stream order per series, until cancelled.

        Raises :class:`StreamOverflow` when the client cannot keep up and
        :class:`HubUnavailable` when Redis has not been reached within ``ready_timeout_s``.
        """
        try:
            await with_timeout(self.ready.wait(), ready_timeout_s)
        except TimeoutError:
            raise HubUnavailable("predictions are not available: Redis unreachable") from None
        # Entries up to ``since`` are the client's already, however late the hub hands them over.
        floor = -1 if since is None else int(since.split("-", 1)[0])
        sent = {s.key: floor for s in series}
        async with self.subscribe(series) as sub:
            if since is not None:
                for s in series:
                    after: str | None = since
                    while True:
                        page = await self.bus.since(s, after, count=PAGE)
                        for p in page:
                            await send(p)
                            sent[s.key] = p.as_of
                        if len(page) < PAGE:
                            break
                        after = page[-1].id
            while True:
                p = await sub.get()
                key = p.series.key
                if p.as_of <= sent.get(key, -1):
                    continue  # replayed already
                await send(p)
                sent[key] = p.as_of

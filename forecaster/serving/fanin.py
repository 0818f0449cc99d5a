"""One blocking read for the new events of every series a forecaster serves (standalone Redis).

A :class:`~forecaster.serving.worker.SeriesWorker` per series each blocking in its own
XREADGROUP costs one command, one reply and one pooled connection per series and candle; when
a hundred series close at the same instant that is most of the serving time. :class:`EventFanIn`
reads the streams of all joined series with one XREADGROUP (the command takes several streams;
on a Redis Cluster they live in different slots, so there each worker keeps its own read) and
hands each worker its series' events through a queue.

The set of streams changes when a worker joins or leaves: the read in flight is cancelled and a new
one started (once for all the joins and leaves that come together). A cancelled read may have been
answered already (the events are then pending for this consumer, never handed out): the next read
first asks for this consumer's pending events after the last one handed out, per series, so none is
stranded. A leaving series' events read that way stay pending for the next holder, who claims them
when it starts: :meth:`EventFanIn.leave` returns only once no read of its stream is in flight, and
the worker releases its lease after that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.lifecycle import cancel_and_wait
from core.series import SeriesId
from storage.events import CandleEvent, CandleEvents

Item = list[CandleEvent] | BaseException
JOIN_SETTLE_S = 0.02  # series joining within this long are added by one restart of the read


class EventFanIn:
    """Reads the new events of the joined series together (see the module docstring)."""

    def __init__(
        self, events: CandleEvents, consumer: str, count: int, block_ms: int = 1000
    ) -> None:
        self.events = events
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        self._queues: dict[SeriesId, asyncio.Queue[Item]] = {}
        self._last: dict[SeriesId, str] = {}  # id of the last event handed out, per series
        self._task: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self.reads = 0

    async def join(self, series: SeriesId) -> asyncio.Queue[Item]:
        """Start handing ``series``' new events out; the queue yields batches (or the error
        that stopped the reads)."""
        queue: asyncio.Queue[Item] = asyncio.Queue()
        self._queues[series] = queue
        self._last[series] = "0"  # the worker handled its own pending events before joining
        await self._restart(JOIN_SETTLE_S)
        return queue

    async def leave(self, series: SeriesId) -> None:
        """Stop reading ``series``' stream; no read of it is in flight once this returns."""
        if self._queues.pop(series, None) is None:
            return
        self._last.pop(series, None)
        await self._restart(0.0)

    async def close(self) -> None:
        """Stop reading for good (workers leaving afterwards find nothing to leave)."""
        self._queues.clear()
        if self._restarting is not None:
            await cancel_and_wait(self._restarting)
        await self._stop()

    async def _restart(self, settle_s: float) -> None:
        """Replace the read in flight by one over the series joined now; returns once the old
        read has ended. Every join and leave within one restart share it: a thousand series
        starting together restart the read a few times, not a thousand (each restart cancels
        a command in flight and sends one naming every stream)."""
        if self._restarting is None:
            self._restarting = asyncio.create_task(self._restart_after(settle_s))
        await asyncio.shield(self._restarting)

    async def _restart_after(self, settle_s: float) -> None:
        try:
            await asyncio.sleep(settle_s)
        finally:
            # Later joins and leaves need a restart of their own: this one's set is taken now.
            self._restarting = None
            try:
                await self._stop()
            finally:  # even if interrupted: the other series must go on being read
                self._start()

    async def _stop(self) -> None:
        # Forgotten before it is cancelled: a cancelled read never hands anything out (the
        # cancellation is raised at the read), so a new read may start even if this is
        # interrupted before the old task has ended.
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def _start(self) -> None:
        if self._queues and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="serve:fan-in")

    async def _loop(self) -> None:
        try:
            # Events a cancelled read may have taken without handing them out.
            await self._read({s: self._last[s] for s in self._queues}, None)
            while True:
                await self._read(dict.fromkeys(self._queues, ">"), self.block_ms)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # e.g. Redis gone: every worker fails and is restarted
            if self._task is asyncio.current_task():
                for queue in self._queues.values():
                    queue.put_nowait(e)
                self._queues.clear()
                self._last.clear()
                self._task = None

    async def _read(self, after: dict[SeriesId, Any], block_ms: int | None) -> None:
        got = await self.events.read_many(after, self.consumer, count=self.count, block_ms=block_ms)
        self.reads += 1
        if got and block_ms is not None:
            # A blocked read is answered at the first stream written to: the other candles of
            # the instant, written by the same pipeline, are in their streams by now. One more
            # read (not blocking) of the series the first found nothing for takes them, so the
            # instant is one batch, not 1 + the rest. Cancelled here, each series has at most
            # ``count`` events read but not handed out: the next read's pending pass hands them
            # out (see the module docstring).
            rest = {s: ">" for s in self._queues if s not in got}
            if rest:
                more = await self.events.read_many(
                    rest, self.consumer, count=self.count, block_ms=None
                )
                self.reads += 1
                got.update(more)
        # Handed out at once, with no await between the reply and the queues: a cancellation
        # lands only inside the read.
        for series, batch in got.items():
            queue = self._queues.get(series)
            if queue is not None:
                self._last[series] = batch[-1].id
                queue.put_nowait(batch)

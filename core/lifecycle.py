"""The lifecycle toolkit every service uses: timeouts that never swallow a cancellation, stopping
tasks for certain, and signal handling scoped to a block.

Python 3.11's ``asyncio.wait_for`` returns its result instead of raising when a cancellation
arrives just as the awaited operation completes (fixed in 3.12). redis-py sends every command
through ``wait_for`` once a socket timeout is set, as its cluster client does by default, so a
worker cancelled at that instant carried on serving while the lease loop waited for it to end;
the same trap made ingest ignore SIGTERM while it filled history. ``asyncio.wait_for`` is
therefore banned by the lint (ruff's banned-api): use :func:`with_timeout` or
``asyncio.timeout``, and :func:`cancel_and_wait` to stop a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

RECANCEL_S = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def with_timeout(aw: Awaitable[T], seconds: float | None) -> T:
    """Await ``aw`` for at most ``seconds`` (None: no limit); TimeoutError after.

    Built on ``asyncio.timeout``: a cancellation of the caller always propagates."""
    async with asyncio.timeout(seconds):
        return await aw


async def wait_until(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds``; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await with_timeout(event.wait(), seconds)
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended, cancelling again while it goes on."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
    if not task.cancelled():
        task.exception()  # retrieved: a failure on the way out is not reported as unhandled


async def cancel_all(*tasks: asyncio.Task[Any]) -> None:
    """:func:`cancel_and_wait` for every task, concurrently."""
    await asyncio.gather(*(cancel_and_wait(t) for t in tasks))


@contextlib.contextmanager
def on_signals(
    callback: Callable[[], object], signals: tuple[signal.Signals, ...] = STOP_SIGNALS
) -> Iterator[None]:
    """Run ``callback`` in the event loop on SIGTERM/SIGINT while the block runs; the handlers
    are removed when it ends (however it ends)."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


class Service:
    """A long-running service as an async context manager.

    ``async with service:`` starts it and, however the block ends (a clean stop, an error, a
    cancellation), stops it and releases what it holds, so a crashed task never skips the
    clean-up. Subclasses implement :meth:`start`, :meth:`run`, :meth:`stop` and an idempotent
    :meth:`close`.
    """

    async def start(self) -> None:
        """Connect and prepare; a failure here is cleaned up by :meth:`close` too."""

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask :meth:`run` to return (callable from a signal handler)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections and tasks; safe to call more than once."""

    async def __aenter__(self: S) -> S:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self.close()


S = TypeVar("S", bound=Service)

"""Stopping asyncio tasks for certain, even when a library swallowed the first cancellation.

Python 3.11's ``asyncio.wait_for`` returns its result instead of raising when a cancellation
arrives just as the awaited operation completes (fixed in 3.12). redis-py sends every command
through ``wait_for`` once a socket timeout is set, as its cluster client does by default, so a
worker cancelled at that instant carried on serving while the lease loop waited for it to end.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and return once it has ended, cancelling again while it goes on."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
    if not task.cancelled():
        task.exception()  # retrieved: a failure on the way out is not reported as unhandled

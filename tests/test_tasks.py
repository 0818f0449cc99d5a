"""Stopping tasks for certain: a swallowed cancellation does not leave a worker running."""

from __future__ import annotations

import asyncio

import pytest

from core.lifecycle import cancel_and_wait


async def test_a_task_that_swallows_its_first_cancellation_is_still_stopped() -> None:
    """As Python 3.11's ``wait_for`` does when the cancel lands as its operation completes
    (redis-py sends through it whenever a socket timeout is set)."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start
    async with asyncio.timeout(10):
        await cancel_and_wait(task)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_fails_on_the_way_out_is_waited_for_and_not_left_unretrieved() -> None:
    async def failing_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(failing_cleanup())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done() and not task.cancelled()
    with pytest.raises(RuntimeError):
        task.result()


async def test_a_finished_task_is_left_as_it_is() -> None:
    task = asyncio.create_task(asyncio.sleep(0, result=7))
    await task
    await cancel_and_wait(task)
    assert task.result() == 7

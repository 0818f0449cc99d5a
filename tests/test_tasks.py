"""Stopping tasks for certain: a swallowed cancellation does not leave a worker running."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.lifecycle import Service, cancel_and_wait


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


class Recorder(Service):
    """A service that records its lifecycle; ``fail`` makes one step raise."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.stopped = asyncio.Event()
        self.running = asyncio.Event()

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail == "start":
            raise OSError("exchange unreachable")

    async def run(self) -> None:
        self.calls.append("run")
        self.running.set()
        if self.fail == "run":
            raise RuntimeError("a task crashed")
        await self.stopped.wait()

    def stop(self) -> None:
        self.calls.append("stop")
        self.stopped.set()

    async def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("fail", ["", "start", "run", "cancel"])
async def test_a_service_is_closed_however_its_block_ends(fail: str) -> None:
    svc = Recorder(fail)

    async def main() -> None:
        async with svc:
            await svc.run()

    task = asyncio.create_task(main())
    if fail in ("", "cancel"):
        async with asyncio.timeout(5):
            await svc.running.wait()
        svc.stop() if fail == "" else task.cancel()
    with contextlib.suppress(OSError, RuntimeError, asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert svc.calls[0] == "start" and svc.calls[-1] == "close"
    assert ("run" in svc.calls) == (fail != "start")

from __future__ import annotations

import asyncio

import pytest

from streamproxy.proxy.interruption import StopWhenDone

pytestmark = pytest.mark.anyio


async def test_a_watcher_that_finishes_ends_the_block_quietly() -> None:
    watcher = asyncio.ensure_future(asyncio.sleep(0.01))
    reached_end = False
    with StopWhenDone(watcher) as stop:
        await asyncio.sleep(10)
        reached_end = True
    assert not reached_end
    assert stop.is_stopped and stop.stopped_by is watcher
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending on this task


async def test_a_cancellation_from_outside_still_propagates_when_a_watcher_finishes_too() -> None:
    watcher = asyncio.ensure_future(asyncio.sleep(0.01))

    async def work() -> None:
        with StopWhenDone(watcher):
            await asyncio.sleep(10)
        raise AssertionError("the outside cancellation was swallowed")

    task = asyncio.create_task(work())
    await asyncio.sleep(0)  # the block is entered: its callback is the watcher's first
    await watcher
    task.cancel()  # after the watcher's own cancel, before the task ran again
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_block_that_ends_first_is_not_cancelled_later() -> None:
    watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with StopWhenDone(watcher) as stop:
        await asyncio.sleep(0)
    watcher.set_result(None)
    await asyncio.sleep(0.01)  # the watcher's callback ran after the block: it does nothing
    assert not stop.is_stopped and stop.stopped_by is None

"""The write timeout's shared timer (node/api/write_deadlines.py): what times out, what does
not, and that a cancellation from outside stays a cancellation. No durations are asserted:
a write that never finishes is what reaches its deadline."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.node.api.write_deadlines import WriteDeadlines


async def test_a_write_that_finishes_keeps_its_result_and_one_that_hangs_times_out() -> None:
    deadlines = WriteDeadlines(1.0, asyncio.get_running_loop())
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def quick(n: int) -> int:
        await asyncio.sleep(0)
        return n

    hanging = asyncio.create_task(deadlines.run(never))
    quick_ones = [asyncio.create_task(deadlines.run(quick(n))) for n in range(5)]
    assert await asyncio.gather(*quick_ones) == list(range(5))
    with pytest.raises(TimeoutError):
        await hanging
    assert never.cancelled()
    # A later write gets its own deadline, and the finished ones are dropped as it arrives.
    assert await deadlines.run(quick(7)) == 7
    assert len(deadlines) <= 1


async def test_deadlines_expire_in_order_and_spare_the_finished() -> None:
    deadlines = WriteDeadlines(1.0, asyncio.get_running_loop())
    release = asyncio.Event()

    async def until_released() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(deadlines.run(asyncio.Event().wait()))
    second = asyncio.create_task(deadlines.run(until_released()))
    await asyncio.sleep(0)
    release.set()
    assert await second == "done"
    with pytest.raises(TimeoutError):
        await first


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    deadlines = WriteDeadlines(30.0, asyncio.get_running_loop())
    task = asyncio.create_task(deadlines.run(asyncio.Event().wait()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


"""node/api/inline_step.py: a coroutine that never suspends runs to its end inline; one that
suspends goes on as a task from where it stopped, wakes on what it waits for, and is
cancelled like any task."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.node.api.inline_step import run_inline


async def test_a_coroutine_that_never_suspends_ends_inline() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("ran")

    assert run_inline(quick(), asyncio.get_running_loop()) is None
    assert done == ["ran"]


async def test_a_suspended_coroutine_goes_on_as_a_task() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()
    seen: list[object] = []

    async def waits() -> None:
        seen.append("start")
        seen.append(await first)
        await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes
        seen.append(await second)

    task = run_inline(waits(), loop)
    assert task is not None and seen == ["start"]
    first.set_result(1)
    loop.call_soon(second.set_result, 2)
    await task
    assert seen == ["start", 1, 2]


async def test_a_suspended_coroutine_sees_exceptions_and_cancellation() -> None:
    loop = asyncio.get_running_loop()
    failing: asyncio.Future[int] = loop.create_future()
    never: asyncio.Future[int] = loop.create_future()
    seen: list[str] = []
    caught = asyncio.Event()

    async def handles() -> None:
        try:
            await failing
        except ValueError:
            seen.append("caught")
            caught.set()
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = run_inline(handles(), loop)
    assert task is not None
    failing.set_exception(ValueError("x"))
    await caught.wait()
    assert seen == ["caught"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["caught", "cancelled"]

"""The graceful stop's budget (node/stop_budget.py): a step that overruns is named with its
stack and left behind, the next step still runs, and the last step keeps its reserve."""

from __future__ import annotations

import asyncio
import logging

import pytest
from shardkv.node.stop_budget import StopBudget, cancel_leftovers, task_stack


async def _stubborn(started: asyncio.Event, release: asyncio.Event) -> None:
    """Swallows its first cancellation, as a handler closing a websocket in ``finally`` can."""
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await release.wait()


async def test_an_overrunning_step_is_logged_with_its_stack_and_the_next_one_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    budget = StopBudget(10.0, reserve_s=1.0)
    started, release = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def next_step() -> None:
        ran.append("next")

    with caplog.at_level(logging.INFO, logger="shardkv.node.stop"):
        finished = await budget.step("stubborn", _stubborn(started, release), 0.2)
        assert started.is_set()
        assert await budget.step("next", next_step(), 1.0)
    assert finished is False and ran == ["next"] and budget.overran == ["stubborn"]
    warning = next(r for r in caplog.records if "stubborn" in r.getMessage())
    assert "going on without it" in warning.getMessage()
    assert "_stubborn" in warning.fields["stack"]  # type: ignore[attr-defined]
    release.set()


async def test_a_failing_step_is_logged_and_counts_as_finished(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise OSError("disk gone")

    with caplog.at_level(logging.ERROR, logger="shardkv.node.stop"):
        assert await StopBudget(5.0, reserve_s=1.0).step("broken", broken(), 1.0)
    assert any("broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_reserve_is_only_the_last_steps() -> None:
    now = [100.0]
    budget = StopBudget(10.0, reserve_s=3.0, clock=lambda: now[0])
    assert budget.remaining() == 7.0 and budget.remaining(last=True) == 10.0
    now[0] = 108.0  # an earlier step ate into the reserve's time: the others get none
    assert budget.remaining() == 0.0 and budget.remaining(last=True) == 2.0


async def test_a_step_bound_never_exceeds_the_budget() -> None:
    budget = StopBudget(0.3, reserve_s=0.1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await budget.step("sleeper", asyncio.sleep(30), 30.0)
    assert loop.time() - began < 5.0  # bounded by the budget's 0.2 s, not the step's 30 s


async def test_leftovers_that_ignore_cancellation_are_reported() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(started, release), name="stubborn-task")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite-task")
    await started.wait()
    stuck = await cancel_leftovers(0.2)
    assert polite.cancelled()
    assert len(stuck) == 1 and stuck[0].startswith("stubborn-task:") and "_stubborn" in stuck[0]
    release.set()
    await stubborn


async def test_a_stack_ends_in_what_the_innermost_coroutine_awaits() -> None:
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    stack = task_stack(task)
    assert stack.index("in outer") < stack.index("in inner") < stack.index("awaiting")
    gate.set()
    await task

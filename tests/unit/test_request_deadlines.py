"""The connection's deadline queue: one timer for requests sent with the same budget, a timer
of its own for one with an earlier deadline, answered requests dropped from the head."""

from __future__ import annotations

import asyncio
from typing import Any

from shardkv.client.request_deadlines import RequestDeadlines


def expired_into(log: list[tuple[str, float]]) -> Any:
    def expire(future: asyncio.Future[Any], op: str, budget: float) -> None:
        log.append((op, budget))
        future.set_exception(TimeoutError(op))
    return expire


async def test_requests_expire_in_deadline_order_with_one_timer() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    deadlines = RequestDeadlines(loop, expired_into(log))
    first, second = loop.create_future(), loop.create_future()
    assert deadlines.add(first, "a", 0.05) is None
    assert deadlines.add(second, "b", 0.1) is None
    await asyncio.sleep(0.07)
    assert first.done() and not second.done()
    await asyncio.sleep(0.06)
    assert second.done()
    assert log == [("a", 0.05), ("b", 0.1)]
    for future in (first, second):
        future.exception()  # retrieved: no "never retrieved" warning
    assert len(deadlines) == 0


async def test_an_earlier_deadline_gets_its_own_timer() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    deadlines = RequestDeadlines(loop, expired_into(log))
    slow, quick = loop.create_future(), loop.create_future()
    assert deadlines.add(slow, "slow", 5.0) is None
    own = deadlines.add(quick, "quick", 0.05)
    assert own is not None
    await asyncio.sleep(0.08)
    assert quick.done() and not slow.done()
    assert log == [("quick", 0.05)]
    quick.exception()
    slow.cancel()
    deadlines.close()


async def test_answered_requests_leave_the_head_and_are_never_expired() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    deadlines = RequestDeadlines(loop, expired_into(log))
    futures = [loop.create_future() for _ in range(3)]
    for future in futures:
        deadlines.add(future, "op", 0.05)
    futures[1].set_result("answered out of order")
    deadlines.trim()
    assert len(deadlines) == 3  # the first is still waiting: the second stays behind it
    futures[0].set_result("answered")
    deadlines.trim()
    assert len(deadlines) == 1
    await asyncio.sleep(0.08)
    assert log == [("op", 0.05)] and futures[2].done()
    futures[2].exception()


async def test_a_short_budget_after_an_answered_long_one_expires_on_time() -> None:
    """The queue ran empty with its timer armed at the answered request's far deadline:
    the next request, with a shorter budget, must not wait for it (a frozen node behind a
    client whose first request had a long budget)."""
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    deadlines = RequestDeadlines(loop, expired_into(log))
    long = loop.create_future()
    deadlines.add(long, "long", 30.0)
    long.set_result("answered")
    deadlines.trim()
    short = loop.create_future()
    assert deadlines.add(short, "short", 0.05) is None
    await asyncio.sleep(0.08)
    assert log == [("short", 0.05)] and short.done()
    short.exception()
    deadlines.close()


async def test_close_stops_the_timer() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    deadlines = RequestDeadlines(loop, expired_into(log))
    future = loop.create_future()
    deadlines.add(future, "op", 0.02)
    deadlines.close()
    await asyncio.sleep(0.05)
    assert log == [] and not future.done()

"""Running a coroutine's first step inline, and only what is left of it as a task.

A task per request costs the task object, a loop turn before it starts and a callback when
it ends. A get from the memory engine never suspends, so the lean lane runs it inline
(``run_inline``) and answers in the same call; a coroutine that does suspend (the sqlite
engine's get) goes on as a task from where it stopped, as ``asyncio.Task`` itself would have
driven it (Python 3.12's eager tasks do the same; this is 3.11). Only for coroutines that
neither need ``asyncio.current_task()`` nor set context variables in their first step: a
put does both (its write deadline, its write concern), so puts are always tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def run_inline(coro: Coroutine[Any, Any, None],
               loop: asyncio.AbstractEventLoop) -> asyncio.Task[None] | None:
    """Runs ``coro`` until it ends or first suspends; ``None`` if it ended, else the task
    that runs the rest of it."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return loop.create_task(_rest_of(_Resumed(coro, waiting)))


class _Resumed:
    """Awaiting it drives a suspended coroutine on: what the coroutine waits on is passed up
    to the task, and the task's wake-ups (and cancellation) are passed down."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # thrown in by the task: cancellation
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    return


async def _rest_of(resumed: _Resumed) -> None:
    await resumed

"""The write timeout of a replicated node, with one timer for every write in flight.

A write in a cluster answers ``TIMEOUT`` when it has not reached its write concern within
``write_timeout_s``. ``asyncio.timeout`` around each write armed and cancelled a loop timer
per request, a cost of the same order as the rest of the write's bookkeeping. Every write has
the same timeout, so deadlines come in arrival order: they are kept in a FIFO, one timer is
set for the oldest one still pending, and writes that finish are dropped from the front as
new ones arrive. A write past its deadline is cancelled exactly as ``asyncio.timeout`` would
cancel it (its task's cancel count says whether the cancellation was ours), and raises
``TimeoutError`` instead of ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class _Deadline:
    __slots__ = ("done", "expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[object]) -> None:
        self.when = when
        self.task = task
        self.done = False
        self.expired = False


class WriteDeadlines:
    """Runs awaitables under a shared ``timeout_s`` (see the module docstring)."""

    def __init__(self, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout_s = timeout_s
        self._loop = loop
        self._pending: collections.deque[_Deadline] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Deadlines still kept (finished writes are dropped lazily, from the front)."""
        return len(self._pending)

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; ``TimeoutError`` once ``timeout_s`` has passed. Must be
        called from a task (the one cancelled at the deadline)."""
        # Given the loop: ``current_task()`` without one looks the running loop up, a
        # ``getpid()`` system call per write on Python 3.11 (node/wal/wakeup.py).
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("WriteDeadlines.run must be awaited inside a task")
        pending = self._pending
        while pending and pending[0].done:
            pending.popleft()
        deadline = _Deadline(self._loop.time() + self.timeout_s, task)
        pending.append(deadline)
        if self._timer is None:
            self._timer = self._loop.call_at(pending[0].when, self._expire)
        cancelling = task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if deadline.expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        else:
            if deadline.expired:  # expired as it finished: its result stands, as with
                task.uncancel()  # asyncio.timeout
        finally:
            deadline.done = True

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        pending = self._pending
        while pending and (pending[0].done or pending[0].when <= now):
            deadline = pending.popleft()
            if not deadline.done:
                deadline.expired = True
                deadline.task.cancel()
        if pending:
            self._timer = self._loop.call_at(pending[0].when, self._expire)

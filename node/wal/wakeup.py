"""A wake-up flag for the one task that waits on it, bound to its event loop once.

``asyncio.Event`` looks the running loop up each time a wait blocks, and on Python 3.11 that
lookup (``get_running_loop``) makes a ``getpid()`` system call to check for a fork. The WAL's
writer and the Store's applier each block once per group, so a replica paid three such calls
per frame of its primary's stream, about 8% of its event loop's Python time (issue 17,
``bench.replica_stream_bench``). ``Wakeup`` takes its loop when it is made (on that loop) and
never looks again. One waiter at a time, which is all the writer and the applier need.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """``set``/``clear``/``is_set``/``wait`` as ``asyncio.Event`` has them, for one waiter."""

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is)."""
        if self._flag:
            return
        if self._waiter is not None:
            raise RuntimeError("Wakeup has one waiter at a time")
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def wait_at_most(self, limit_s: float | None) -> None:
        """``wait``, given up quietly after ``limit_s`` seconds; with no limit, without
        ``wait_for`` (a task step and a loop lookup per wait)."""
        if limit_s is None:
            await self.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), limit_s)

"""The WAL's own I/O thread: groups that do not go to the disk from the event loop.

``asyncio.to_thread`` per group paid, on the loop thread, for a context copy, a
``concurrent.futures`` future and work item, the executor's idle-thread bookkeeping and a
chained asyncio future, for every group that went to a thread (issue 17). This is one
persistent thread, started with the log, fed through a ``SimpleQueue``: the loop puts the
call and an asyncio future (one wake-up of the thread), the thread runs it and resolves the
future with ``call_soon_threadsafe`` (one wake-up of the loop). Calls run one at a time in
order, which is what the log needs anyway (one writer, one file descriptor, under its I/O
lock).

Nothing about durability changes: the caller awaits the future exactly as it awaited
``to_thread``, an exception raised by the call (a failed ``fdatasync``) reaches it the same
way, and the log fails the group and poisons itself as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled: nobody wants the outcome
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WalWriterThread:
    """Runs blocking calls one after the other on a thread of its own. ``close`` stops it
    once the calls already submitted have run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "shardkv-wal-writer"
                 ) -> None:
        self._loop = loop
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``call(*args)`` on the thread; the future (of the loop) resolves with its result
        or its exception."""
        if self._closed:
            raise RuntimeError("the WAL writer thread is stopped")
        future: asyncio.Future[T] = self._loop.create_future()
        self._calls.put((future, call, args))
        return future

    def _serve(self) -> None:
        loop, calls = self._loop, self._calls
        while True:
            item = calls.get()
            if item is _STOP:
                return
            future, call, args = item
            try:
                result, error = call(*args), None
            except BaseException as exc:  # handed to the awaiting task, raised there
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            del item, future, result, error

    def close(self) -> None:
        """Stop after the calls already submitted (does not wait for them)."""
        if not self._closed:
            self._closed = True
            self._calls.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

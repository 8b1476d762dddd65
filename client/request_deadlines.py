"""The deadlines of one connection's requests, kept with one timer instead of one each.

Every request on a ``NodeConnection`` waits for its answer at most its budget. A timer per
request (``loop.call_at`` then ``cancel``) costs about 2.5 us a request in asyncio: a
``TimerHandle`` object, a push onto the loop's heap that compares handles in Python, the
cancel, and the heap's clean-up of cancelled handles later; with the answer's other costs
that was a twentieth of the client's CPU per put (issue 17). Yet the requests of a connection
are sent with the caller's usual budget, so their deadlines come in order: a queue in send
order, with one timer armed at its head, expires each at the same time a timer of its own
would, at the cost of an append.

- A request whose deadline is earlier than the newest one queued (a caller with a shorter
  budget) gets a timer of its own: the queue stays sorted.
- Answered requests leave the queue from its head as their futures are done (``trim``);
  one that is answered out of order waits there, done, until the requests before it are.
- When the timer fires, requests at the head that are done are dropped, those due are
  failed through ``expire``, and the timer is armed again at the new head, if any. A timer
  armed for a later time than a new head's deadline (the queue ran empty, then a shorter
  budget came) is armed again at once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

Expire = Callable[["asyncio.Future[Any]", str, float], None]


class RequestDeadlines:
    """Deadlines in send order with one timer at the head (see the module's docstring)."""

    __slots__ = ("_armed_at", "_expire", "_loop", "_queue", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Expire) -> None:
        self._loop = loop
        self._expire = expire  # expire(future, op, budget): fail the request as timed out
        self._queue: collections.deque[tuple[float, asyncio.Future[Any], str, float]] = (
            collections.deque())
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, future: asyncio.Future[Any], op: str,
            budget: float) -> asyncio.TimerHandle | None:
        """Fail ``future`` through ``expire`` ``budget`` seconds from now unless it is done
        by then. Returns the request's own timer when it needed one (an earlier deadline
        than the newest queued): the caller cancels it once the request is over."""
        loop = self._loop
        deadline = loop.time() + budget
        queue = self._queue
        if queue and deadline < queue[-1][0]:
            return loop.call_at(deadline, self._expire_one, future, op, budget)
        queue.append((deadline, future, op, budget))
        timer = self._timer
        if timer is None:
            self._arm(deadline)
        elif deadline < self._armed_at:
            # Armed for a request with a longer budget that has been answered since (the
            # queue had run empty): this one must not wait for that time.
            timer.cancel()
            self._arm(deadline)
        return None

    def trim(self) -> None:
        """Drop the finished requests at the head (each request's end calls this)."""
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()

    def close(self) -> None:
        """Stop the timer and forget every deadline (the connection is closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _arm(self, when: float) -> None:
        self._armed_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        due_by = self._armed_at
        queue = self._queue
        while queue:
            deadline, future, op, budget = queue[0]
            if future.done():
                queue.popleft()
                continue
            if deadline > due_by:
                break
            queue.popleft()
            self._expire(future, op, budget)
        if queue:
            self._arm(queue[0][0])

    def _expire_one(self, future: asyncio.Future[Any], op: str, budget: float) -> None:
        if not future.done():
            self._expire(future, op, budget)

"""The highest LSN a majority of the shard holds durably, and the writers waiting for one.

The primary counts itself once its own copy is durable (``local_durable``) and each replica
by the LSN it acknowledged; only ids in the shard's current membership count, so a removed
node never makes a write look committed, and the majority never runs ahead of what the
primary holds itself. A writer waits on a future of its own, kept in a heap by LSN: a count
that moves the majority wakes exactly the writers it covers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Collection, Iterable

from shardkv.cluster.errors import Timeout

Acked = Callable[[], Iterable[tuple[str, int]]]


class MajorityCommit:
    """``members()``: the shard's member ids, this node's included; ``acked()``: (replica id,
    acknowledged LSN) pairs. ``lsn`` is the majority LSN; it never goes back."""

    def __init__(self, node_id: str, members: Callable[[], Collection[str]], acked: Acked,
                 local: int) -> None:
        self.node_id = node_id
        self._members = members
        self._acked = acked
        self.local = local  # what this node holds durably
        self.lsn = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        # Taken at the first wait that blocks (this may be built outside a loop) and kept:
        # each lookup is a ``getpid()`` system call on Python 3.11 (node/wal/wakeup.py).
        self._loop: asyncio.AbstractEventLoop | None = None

    def local_durable(self, lsn: int) -> None:
        if lsn > self.local:
            self.local = lsn
            self.recount()

    def recount(self) -> None:
        """Recompute the majority (after an ack, a local write, a membership change)."""
        members = set(self._members())
        needed = len(members) // 2 + 1
        held = [self.local] if self.node_id in members or not members else []
        held += [lsn for node, lsn in self._acked() if node in members]
        if not members:
            needed = 1
        held.sort(reverse=True)
        majority = held[needed - 1] if len(held) >= needed else 0
        majority = min(majority, self.local)  # never commit what we do not hold
        if majority <= self.lsn:
            return
        self.lsn = majority
        waiters = self._waiters
        while waiters and waiters[0][0] <= majority:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    async def wait(self, lsn: int, within_s: float | None) -> None:
        """Return once ``lsn`` is held by a majority; ``Timeout`` after ``within_s``."""
        if self.lsn >= lsn:
            return
        # The future is this caller's alone, so it is awaited without a shield (one loop
        # iteration from the acknowledgement to the waiter, not two): cancelling the wait
        # cancels it, and ``recount`` skips a cancelled one.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (lsn, next(self._tiebreak), future))
        try:
            if within_s is None:
                await future
            else:
                await asyncio.wait_for(future, within_s)
        except TimeoutError:
            raise Timeout(
                f"lsn {lsn} did not reach a majority within {within_s}s "
                f"(majority holds {self.lsn})",
                lsn=lsn, majority_lsn=self.lsn,
            ) from None

    def fail_all(self, error: BaseException) -> None:
        """Every waiter raises ``error`` (the primary was closed or deposed)."""
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

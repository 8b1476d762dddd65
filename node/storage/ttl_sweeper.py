"""The TTL sweeper: deletes expired keys through the WAL, in batches, in the background.

Expired keys are already invisible to reads (every read compares ``expires_at`` with the
clock), so the sweeper is about space and about agreement: it writes ordinary delete entries,
so replicas (which never expire keys on their own clock) delete exactly the same keys at the
same LSNs, and a snapshot or a replica catching up sees the same state as the primary.

Each round asks the engine's expiry index for due keys, then, under the Store's write lock,
re-checks each against the newest state in write order (the key may have been rewritten, or
be about to be, by a write still in flight) and submits one delete entry for those that are
still the same expired item. A full batch means more may be due, so the next round
starts at once; otherwise the sweeper waits ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.wal.record import Mutation, MutationKind

logger = logging.getLogger(__name__)

FindExpired = Callable[[float, int], Awaitable[list[tuple[bytes, int]]]]
CurrentMany = Callable[[Sequence[bytes]], Awaitable[list[StoredItem | None]]]
Submit = Callable[[list[Mutation]], Awaitable[int]]


class TtlSweeper:
    def __init__(
        self,
        find: FindExpired,
        current_many: CurrentMany,
        submit: Submit,
        lock: asyncio.Lock,
        *,
        interval_s: float,
        batch: int,
        clock: Callable[[], float],
    ) -> None:
        self._find = find
        self._current_many = current_many
        self._submit = submit
        self._lock = lock
        self._interval_s = interval_s
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.swept = 0

    def start(self) -> None:
        if self._task is None and self._interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="ttl-sweeper")

    async def sweep_once(self) -> int:
        """One round: delete up to ``batch`` due keys; returns how many were deleted."""
        return (await self._round())[1]

    async def _round(self) -> tuple[int, int]:
        now = self._clock()
        due = await self._find(now, self._batch)
        if not due:
            return 0, 0
        deleted = await self.delete_if_still_expired(due, now)
        self.swept += deleted
        return len(due), deleted

    async def delete_if_still_expired(self, due: list[tuple[bytes, int]], now: float) -> int:
        keys = [key for key, _ in due]
        async with self._lock:
            current = await self._current_many(keys)
            doomed = [
                (key, version)
                for (key, version), item in zip(due, current, strict=True)
                if item is not None
                and item.version == version
                and item.expires_at is not None
                and item.expires_at <= now
            ]
            if not doomed:
                return 0
            # prev_version: the version that expired (what a watcher's cache drops).
            applied = self._submit([Mutation(MutationKind.DELETE, key, expired=True,
                                             prev_version=version)
                                    for key, version in doomed])
        await applied
        return len(doomed)

    async def _run(self) -> None:
        while True:
            try:
                due, deleted = await self._round()
                # A full batch of which something was deleted: more may be due right now.
                full = due >= self._batch and deleted > 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A failed round (the log refused the write) is retried next interval; the
                # keys stay invisible meanwhile, so nothing is served wrong.
                logger.warning("TTL sweep failed", extra=log_fields(error=repr(exc)))
                full = False
            if not full:
                await asyncio.sleep(self._interval_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

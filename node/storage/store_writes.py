"""The Store's writes: every mutating operation, and the exactly-once path they share.

Writes follow one pattern:

    validate (no lock) -> under the write lock: read the current state (the commit
    pipeline's overlay first, so earlier-ordered writes are seen), decide, submit the entry
    (LSN assigned, WAL enqueued: no await after the read's) -> outside the lock: wait until
    the entry is applied

so concurrent compare-and-swaps serialize on the lock for microseconds while their fsyncs
overlap (group commit). Blind writes (``put`` without a condition, ``mput``, a ``batch`` of
unconditional puts) read nothing and skip the lock: they are ordered the moment they are
submitted, and a conditional writer whose read is in progress still sees them (see
``CommitPipeline.current``).

A write whose answer depends on a not-yet-durable earlier write (a failed condition, a delete
of a key already being deleted) waits until that write is applied before answering, so no
answer ever reveals a write that could still be lost.

``StoreWrites`` is a mixin of ``Store`` (``store.py``), which owns the state it declares
below; it is split out so that each module holds one idea (reads, lifecycle and replication
seams there; the write path here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardkv.cluster.errors import (
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    TooLarge,
    VersionMismatch,
)
from shardkv.cluster.limits import Limits, as_key, as_ttl, as_value
from shardkv.node.storage.commit_pipeline import CommitPipeline
from shardkv.node.storage.engines.engine import Engine
from shardkv.node.storage.scan_cursor import next_cursor
from shardkv.node.storage.sessions import (
    SESSION_PREFIX,
    SESSION_RANGE_END,
    Session,
    SessionIndex,
    SessionRecord,
    check_order,
    decode_record,
    seq_and_time_of,
)
from shardkv.node.storage.snapshots.snapshotter import Snapshotter
from shardkv.node.storage.store_model import BatchOp, BatchResult, DeleteResult
from shardkv.node.storage.write_plan import (
    SAME_ENTRY,
    CheckedOp,
    Decision,
    check_batch,
    check_conditions_args,
    condition_error,
    expiry,
    is_blind,
    live,
    next_counter,
    plan_batch,
    put_mutation,
)
from shardkv.node.testing import failpoints
from shardkv.node.wal.record import Mutation, MutationKind


class StoreWrites:
    """The write operations of ``Store``; see the module docstring."""

    # Owned and set by ``Store.__init__``.
    _pipeline: CommitPipeline
    _engine: Engine
    _snapshotter: Snapshotter
    _sessions: SessionIndex
    _lock: asyncio.Lock
    _clock: Callable[[], float]
    _limits: Limits
    _threshold: int
    _sync_reads: bool  # the engine answers reads without I/O (``Engine.sync_reads``)
    dedup_hits: int

    # ----------------------------------------------------------------------------- writes
    #
    # Every write is a ``decide`` coroutine run by ``_write`` under the lock: it reads what it
    # needs and returns a Decision (mutations, the answer's payload, or a definite error).
    # A write stamped with a client session first looks for its record (a retry is answered
    # from it), and logs its own record in the same entry as its mutations (sessions.py).
    # Unstamped blind writes keep their lock-free path.

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        session: Session | None = None,
    ) -> int:
        """Write ``value``; returns the new version. Raises VersionMismatch when a condition
        fails (nothing is written)."""
        key, raw, ttl = as_key(key), as_value(value, self._limits), as_ttl(ttl)
        if_version = check_conditions_args(if_version, if_absent)
        conditional = if_version is not None or if_absent
        if failpoints.ARMED:  # TEST ONLY: a put between the node's checks and its ordering
            await failpoints.hit("put_before_order")
        if not conditional:
            # A blind write reads nothing, so it needs no lock: ``submit`` orders it at once,
            # and a conditional writer reading meanwhile sees it in the overlay (``current``
            # re-checks the overlay after its read, with no await before its own submit).
            # A stamped one too, when the session cache says it is new (no await between
            # that check, the stamp and the submit).
            # The version it replaces is read in write order too: from memory without an
            # await, or (an engine doing I/O) with one, and then submitted before the next.
            now = self._clock()
            pipeline = self._pipeline
            prev = pipeline.live_version(key, now) if self._sync_reads else \
                (await pipeline.live_versions([key], now))[0]
            if session is None:
                return await self._submit(
                    [put_mutation(key, raw, expiry(ttl, now), self._threshold, prev)])
            mutations = [put_mutation(key, raw, expiry(ttl, now), self._threshold, prev)]
            if self._sessions.stamp_if_new(mutations, session, now):
                return await self._submit(mutations)

        async def decide(now: float) -> Decision:
            current = live(await self._pipeline.current(key), now)
            if conditional:
                error = condition_error(key, current, if_version=if_version, if_absent=if_absent)
                if error is not None:
                    return Decision([], error=error)
            prev = None if current is None else current.version
            return Decision([put_mutation(key, raw, expiry(ttl, now), self._threshold, prev)])

        return (await self._write(decide, session))[1]

    async def delete(
        self, key: bytes, *, if_version: int | None = None, session: Session | None = None
    ) -> DeleteResult:
        """Delete the key. Deleting an absent key writes nothing and answers (False,
        last_lsn); ``if_version`` must match (0 = absent) or VersionMismatch is raised."""
        key = as_key(key)
        if_version = check_conditions_args(if_version, False)

        async def decide(now: float) -> Decision:
            current = live(await self._pipeline.current(key), now)
            error = condition_error(key, current, if_version=if_version, if_absent=False)
            if error is not None:
                return Decision([], error=error)
            if current is None:
                return Decision([], payload=False)
            return Decision([Mutation(MutationKind.DELETE, key, prev_version=current.version)],
                            payload=True)

        deleted, version = await self._write(decide, session)
        return DeleteResult(bool(deleted), version)

    async def incr(
        self, key: bytes, delta: int = 1, *, session: Session | None = None
    ) -> tuple[int, int]:
        """Add ``delta`` to the integer stored (as ASCII decimal) at ``key``; an absent key
        counts as 0. The key keeps its TTL. Returns (new value, version)."""
        key = as_key(key)

        async def decide(now: float) -> Decision:
            current = live(await self._pipeline.current(key), now)
            try:
                result = next_counter(key, current, delta)
            except InvalidArgument as exc:
                return Decision([], error=exc)
            expires_at = None if current is None else current.expires_at
            mutation = put_mutation(key, str(result).encode(), expires_at, self._threshold,
                                    None if current is None else current.version)
            return Decision([mutation], payload=result)

        value, version = await self._write(decide, session)
        return int(value), version

    async def expire(self, key: bytes, ttl: float, *, session: Session | None = None) -> int:
        """Set the key's TTL (the value is kept); returns the new version."""
        key, checked_ttl = as_key(key), as_ttl(ttl)
        if checked_ttl is None:
            raise InvalidArgument("ttl must be a positive number of seconds")

        async def decide(now: float) -> Decision:
            current = live(await self._pipeline.current(key), now)
            if current is None:
                return Decision([], error=NotFound("key not found", key=key))
            return Decision([Mutation(MutationKind.PUT, key, current.value, current.compressed,
                                      now + checked_ttl, False, current.version)])

        return (await self._write(decide, session))[1]

    async def mput(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        ttl: float | None = None,
        session: Session | None = None,
    ) -> int:
        """Write every pair in one atomic entry; returns its version."""
        if not items:
            raise InvalidArgument("mput needs at least one item")
        if len(items) > self._limits.max_batch_ops:
            raise TooLarge(f"{len(items)} items; the limit is {self._limits.max_batch_ops}")
        ttl = as_ttl(ttl)
        pairs = [(as_key(key), as_value(value, self._limits)) for key, value in items]
        size = sum(len(key) + len(value) for key, value in pairs)
        if size > self._limits.max_batch_bytes:
            raise TooLarge(f"{size} bytes in one mput; the limit is {self._limits.max_batch_bytes}")

        keys = [key for key, _ in pairs]

        async def mutations(now: float) -> list[Mutation]:
            prevs = dict(zip(keys, await self._pipeline.live_versions(keys, now), strict=True))
            expires_at = expiry(ttl, now)
            out = []
            for k, v in pairs:
                out.append(put_mutation(k, v, expires_at, self._threshold, prevs[k]))
                prevs[k] = SAME_ENTRY  # a key given twice replaces its own first write
            return out

        if session is None:  # blind: no lock, as in put (no await between read and submit)
            return await self._submit(await mutations(self._clock()))

        async def decide(now: float) -> Decision:
            return Decision(await mutations(now))

        return (await self._write(decide, session))[1]

    async def mdelete(
        self, keys: Sequence[bytes], *, session: Session | None = None
    ) -> tuple[int, int]:
        """Delete the keys that exist, in one atomic entry; returns (deleted, version)."""
        if not keys:
            raise InvalidArgument("mdelete needs at least one key")
        if len(keys) > self._limits.max_batch_ops:
            raise TooLarge(f"{len(keys)} keys; the limit is {self._limits.max_batch_ops}")
        unique = list(dict.fromkeys(as_key(key) for key in keys))

        async def decide(now: float) -> Decision:
            current = await self._pipeline.current_many(unique)
            doomed = [(k, alive.version) for k, stored in zip(unique, current, strict=True)
                      if (alive := live(stored, now)) is not None]
            return Decision([Mutation(MutationKind.DELETE, k, prev_version=version)
                             for k, version in doomed], payload=len(doomed))

        deleted, version = await self._write(decide, session)
        return int(deleted), version

    async def batch(self, ops: Sequence[BatchOp], *, session: Session | None = None
                    ) -> BatchResult:
        """Apply puts and deletes atomically, as one entry. Every condition is checked
        against the state before the batch; if one fails, VersionMismatch names its
        ``index``, ``key`` and ``current_version`` and nothing is written."""
        return await self.batch_checked(check_batch(ops, self._limits), session=session)

    async def batch_checked(
        self, checked: Sequence[CheckedOp], *, session: Session | None = None
    ) -> BatchResult:
        """``batch`` for ops already validated: the operation layer parses a request's ops
        from the wire straight into ``CheckedOp``s (every check ``check_batch`` makes, and
        more), so they are not checked a second time here. Callers holding ``BatchOp``s use
        ``batch``."""
        if not checked:
            raise InvalidArgument("a batch needs at least one operation")
        keys = list(dict.fromkeys([op.key for op in checked]))
        if is_blind(checked) and session is None:
            # Only unconditional puts: nothing to compare, so, like ``mput``, no lock; the
            # versions they replace are read in write order and submitted with no await
            # in between.
            now = self._clock()
            prevs = dict(zip(keys, await self._pipeline.live_versions(keys, now), strict=True))
            plan = plan_batch(checked, {}, now=now, threshold=self._threshold, prevs=prevs)
            version = await self._submit(plan.mutations)
            return BatchResult(version, tuple(_fill(plan.results, version)))

        async def decide(now: float) -> Decision:
            current = await self._pipeline.current_many(keys)
            before = {
                k: None if item is None or (
                    item.expires_at is not None and item.expires_at <= now) else item
                for k, item in zip(keys, current, strict=True)
            }  # live(item, now), inlined: one entry per key of the batch
            prevs = {k: None if item is None else item.version for k, item in before.items()}
            try:
                plan = plan_batch(checked, before, now=now, threshold=self._threshold,
                                  prevs=prevs)
            except VersionMismatch as exc:
                return Decision([], error=exc)
            return Decision(plan.mutations, payload=plan.results)

        results, version = await self._write(decide, session)
        return BatchResult(version, tuple(_fill(results, version)))

    async def _write(
        self, decide: Callable[[float], Awaitable[Decision]], session: Session | None
    ) -> tuple[Any, int]:
        """Run one write: (payload, version), or its definite error raised.

        Under the lock: the session's record first (a retry is answered from it, never
        applied again), else ``decide``, then one entry with the mutations and, for a
        stamped write, its session record, submitted with no await after the reads. A
        decision that writes nothing (a failed condition, a delete of an absent key) still
        waits until everything ordered before it is applied, so its answer reveals nothing
        that could be lost."""
        replay: SessionRecord | None = None
        applied: asyncio.Future[int] | None = None
        async with self._lock:
            self._pipeline.check_writable()
            now = self._clock()
            if session is not None:
                if self._sessions.stale:
                    await self._pipeline.barrier()  # rows in flight are rows too
                    await self._load_sessions()
                if not self._sessions.is_new(session, now):
                    replay = check_order(session, await self._session_record(session, now))
            if replay is None:
                decision = await decide(now)
                mutations = decision.mutations
                if session is not None:
                    mutations = mutations + self._sessions.stamp(session, decision.outcome, now)
                if mutations:
                    applied = self._submit(mutations)
        if replay is not None:
            return await self._replay(session, replay)  # type: ignore[arg-type]
        if applied is None:
            await self._pipeline.barrier()
            version = self._pipeline.last_lsn
        else:
            version = await applied
        if decision.error is not None:
            raise decision.error
        return decision.payload, version

    async def _session_record(self, session: Session, now: float) -> SessionRecord | None:
        item = await self._pipeline.current(session.key)
        if item is None:
            return None
        record = decode_record(item)
        return None if self._sessions.expired(record, now) else record

    async def _replay(self, session: Session, seen: SessionRecord) -> tuple[Any, int]:
        """Answer a retry from its record, once the entry that logged it is applied. If that
        entry never applies (the pipeline failed under it), its fate is decided elsewhere:
        OUTCOME_UNKNOWN, which the client retries (at the next primary, which knows)."""
        await self._pipeline.barrier()
        item = await self._engine.get(session.key)
        record = check_order(session, None if item is None else decode_record(item))
        if record is None or record.lsn != seen.lsn:
            raise OutcomeUnknown("an earlier attempt of this write was ordered but has not "
                                 "committed here; retry (it is deduplicated)")
        self.dedup_hits += 1
        if record.outcome.error is not None:
            raise record.outcome.error
        return record.outcome.payload, record.lsn

    async def _load_sessions(self) -> None:
        """Rebuild the session index from the rows (at open, and when made primary)."""
        rows: list[tuple[bytes, int, float]] = []
        low: bytes | None = SESSION_PREFIX
        while low is not None:
            page = await self._engine.scan(low, SESSION_RANGE_END, 1000)
            rows.extend((key, *seq_and_time_of(item.value)) for key, item in page)
            low = next_cursor(page[-1][0]) if len(page) == 1000 else None
        self._sessions.reset(rows)

    def _submit(self, mutations: list[Mutation]) -> asyncio.Future[int]:
        self._snapshotter.guard.check()  # DISK_FULL before the WAL could meet ENOSPC
        applied = self._pipeline.submit(mutations)
        self._snapshotter.note_logged(self._pipeline.take_logged_bytes())
        return applied


def _fill(results: list[dict], version: int) -> list[dict]:
    for result in results:
        if result["op"] == "put":
            result["version"] = version
    return results

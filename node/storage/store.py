"""The Store: key-value operation semantics over a WAL and an engine.

Reads go to the engine, which only ever holds applied (durable, committed) entries, and hide
expired items by comparing ``expires_at`` with the clock. Writes follow one pattern:

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

``commit_pipeline.py`` holds the ordering machinery and the replication seam (the
commit gate); ``write_plan.py`` holds the pure decisions; ``recovery.py`` opens the
files; ``snapshots/snapshotter.py`` and ``ttl_sweeper.py`` are the background work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardkv.cluster.errors import (
    InvalidArgument,
    NotFound,
    OutcomeUnknown,
    TooLarge,
    VersionMismatch,
)
from shardkv.cluster.limits import MAX_SCAN_LIMIT, as_key, as_ttl, as_value
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.storage.commit_pipeline import CommitGate, CommitPipeline
from shardkv.node.storage.engines.engine import Engine, SnapshotView
from shardkv.node.storage.recovery import recover
from shardkv.node.storage.scan_cursor import (
    check_limit,
    next_cursor,
    resolve_range,
    scan_page,
    to_item,
)
from shardkv.node.storage.sessions import (
    SESSION_PREFIX,
    SESSION_RANGE_END,
    Outcome,
    Session,
    SessionIndex,
    SessionRecord,
    check_order,
    decode_record,
    seq_and_time_of,
)
from shardkv.node.storage.snapshots.snapshot import SnapshotMeta, read_snapshot, write_snapshot
from shardkv.node.storage.snapshots.snapshotter import Snapshotter
from shardkv.node.storage.store_model import (
    BatchOp,
    BatchResult,
    DeleteResult,
    Item,
    RecoveryReport,
    ScanPage,
    StoreConfig,
    StoreStats,
)
from shardkv.node.storage.ttl_sweeper import TtlSweeper
from shardkv.node.storage.write_plan import (
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
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog
from shardkv.node.watch.watch_hub import WatchHub

__all__ = [
    "BatchOp",
    "BatchResult",
    "DeleteResult",
    "Item",
    "ScanPage",
    "Store",
    "StoreConfig",
    "StoreStats",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Store:
    """Open with ``await Store.open(config)``; see the module docstring."""

    def __init__(
        self,
        config: StoreConfig,
        wal: WriteAheadLog,
        engine: Engine,
        snapshot: SnapshotMeta | None,
        recovery: RecoveryReport,
        clock: Clock,
    ) -> None:
        self.config = config
        self._wal = wal
        self._engine = engine
        self._clock = clock
        self._limits = config.limits
        self._threshold = config.compression_threshold
        self._recovery = recovery
        self._lock = asyncio.Lock()
        self._pipeline = CommitPipeline(
            wal, engine, epoch=max(config.epoch, wal.last_epoch), clock=clock
        )
        # Watches see each entry once applied (node/watch/): served from here and the WAL.
        self.watch_hub = WatchHub(engine.applied_lsn)
        self._pipeline.on_apply = self.watch_hub.publish
        self._snapshotter = Snapshotter(
            config, engine, wal, epoch=lambda: self._pipeline.epoch, latest=snapshot
        )
        self._sweeper = TtlSweeper(
            engine.expired,
            self._pipeline.current_many,
            self._submit,
            self._lock,
            interval_s=config.ttl_sweep_interval_s,
            batch=config.ttl_sweep_batch,
            clock=clock,
        )
        self._sessions = SessionIndex(ttl_s=config.session_ttl_s,
                                      max_sessions=config.max_sessions)
        self.dedup_hits = 0  # retries answered from a session record
        self._closed = False

    @classmethod
    async def open(cls, config: StoreConfig, *, clock: Clock = NODE_CLOCK.wall) -> Store:
        """Recover from ``config.data_dir`` (snapshot, then WAL replay) and start the
        background sweeper. ``clock`` is the wall clock used for TTLs and the entries'
        timestamps: the node's (skewable) one unless a test passes its own."""
        wal, engine, snapshot, report = await recover(config)
        store = cls(config, wal, engine, snapshot, report, clock)
        await store._load_sessions()
        store._sweeper.start()
        return store

    async def close(self) -> None:
        """Finish in-flight writes, stop background work, close the log and the engine."""
        if self._closed:
            return
        self._closed = True
        self.watch_hub.reset(self.applied_lsn, "the node is stopping")
        await self._sweeper.stop()
        await self._snapshotter.close()
        await self._pipeline.close()
        try:
            await self._wal.close()
        finally:
            await self._engine.close()
        logger.info("store closed", extra=log_fields(last_lsn=self.last_lsn))

    # ------------------------------------------------------------------------- properties

    @property
    def last_lsn(self) -> int:
        """The LSN of the last entry ordered (it may not be durable yet)."""
        return self._pipeline.last_lsn

    @property
    def applied_lsn(self) -> int:
        """The LSN reads reflect: everything up to it is durable and committed."""
        return self._engine.applied_lsn

    @property
    def epoch(self) -> int:
        return self._pipeline.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        if value < self._pipeline.epoch:
            raise ValueError(f"epoch {value} is older than {self._pipeline.epoch}")
        self._pipeline.epoch = value

    @property
    def key_count(self) -> int:
        return self._engine.key_count

    @property
    def write_failure(self) -> str | None:
        """Why the log refuses writes (an I/O error: a full disk, a failed fsync), or None."""
        return self._pipeline.failure

    @property
    def wal(self) -> WriteAheadLog:
        """The log itself, for the replication stream (read_from) and a rejoining replica."""
        return self._wal

    def set_commit_gate(
        self,
        gate: CommitGate | None,
        *,
        local_gate: CommitGate | None = None,
        on_submit: Callable[[WalEntry], None] | None = None,
    ) -> None:
        """Install the replication seam: see ``commit_pipeline.py``. ``local_gate`` is
        for write concern ``one``; ``on_submit`` sees every entry as it is ordered."""
        self._pipeline.gate = gate
        self._pipeline.local_gate = local_gate
        self._pipeline.on_submit = on_submit

    async def barrier(self) -> None:
        """Wait until every write ordered so far is applied or failed."""
        await self._pipeline.barrier()

    async def begin_epoch(self, epoch: int) -> int:
        """Start writing in ``epoch`` (this node was made primary): log a no-op entry in it,
        which marks in every log where the epoch began. Returns its LSN once committed."""
        async with self._lock:
            self._pipeline.check_writable()
            self.epoch = max(epoch, self._pipeline.epoch)
            await self._pipeline.barrier()
            await self._load_sessions()
            applied = self._submit([])
        return await applied

    def submit_replicated(self, entry: WalEntry) -> asyncio.Future[int]:
        """Order an entry received from the primary (it carries its own LSN and epoch, and
        must be ``last_lsn + 1``); the future resolves when it is applied here."""
        if entry.epoch > self._pipeline.epoch:
            self._pipeline.epoch = entry.epoch
        self._sessions.stale = True  # its session rows are not in the primary's cache
        applied = self._pipeline.submit_entry(entry)
        self._snapshotter.note_logged(self._pipeline.take_logged_bytes())
        return applied

    async def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the whole state with a snapshot (a replica too far behind its primary):
        the log restarts after the snapshot's LSN. Waits for writes in flight first."""
        async with self._lock:
            await self._install_locked(meta)

    async def jump_lsn(self, floor: int) -> int:
        """Make ``last_lsn >= floor`` on a store that may hold keys (an online migration's
        target, docs/resharding.md): with writes held, the whole state is written as the
        snapshot at ``floor`` and the log restarts after it, so the next write gets
        ``floor + 1``; replicas catch up from that snapshot like any replica behind the
        log. Every key keeps its value, expiry and version. Writes wait meanwhile (the
        time to write and reload the state). Idempotent; returns ``last_lsn``."""
        async with self._snapshotter.lock, self._lock:
            if self.last_lsn >= floor:
                return self.last_lsn
            self._pipeline.check_writable()
            # Blind writes do not take the lock: hold them (a retryable refusal) until the
            # log has restarted, or one could be appended in the middle of the restart.
            self._pipeline.held = "this shard is raising its LSN floor for a migration; retry"
            try:
                await self._pipeline.barrier()
                view = await self._engine.snapshot_view()
                meta = await write_snapshot(self.config.snapshot_dir, floor, self.epoch,
                                            view.rows)
                await self._install_locked(meta)
            finally:
                self._pipeline.held = None
            logger.info("LSN floor raised", extra=log_fields(floor=floor, keys=meta.count))
        return self.last_lsn

    async def _install_locked(self, meta: SnapshotMeta) -> None:
        await self._pipeline.barrier()
        # The log first: a crash in between leaves an empty log and the snapshot file,
        # from which recovery loads the state (never old entries over the new state).
        await self._wal.restart_at(meta.lsn + 1, meta.epoch)
        await self._engine.load(read_snapshot(meta.path), meta.lsn)
        self._pipeline.reset(meta.lsn, meta.epoch)
        self.watch_hub.reset(meta.lsn, "the state was replaced by a snapshot")
        self._sessions.stale = True
        self._snapshotter.installed(meta)

    async def truncate_log_after(self, lsn: int) -> None:
        """Drop the log suffix after ``lsn`` (an old primary rejoining as a replica drops
        what the new primary never had). Only entries not yet applied can be dropped: with
        a commit gate, that is everything a majority did not acknowledge. Make a blocking
        gate raise first, or this waits for it."""
        async with self._lock:
            await self._pipeline.barrier()
            if self._engine.applied_lsn > lsn:
                raise ValueError(
                    f"entries up to {self._engine.applied_lsn} are applied; cannot drop back "
                    f"to {lsn} (install a snapshot instead)"
                )
            await self._wal.truncate_after(lsn)
            self._pipeline.reset(lsn, self._wal.last_epoch)
            self._sessions.stale = True

    # ------------------------------------------------------------------------------ reads

    async def get(self, key: bytes) -> Item | None:
        stored = live(await self._engine.get(as_key(key)), self._clock())
        return None if stored is None else to_item(stored)

    async def exists(self, key: bytes) -> Item | None:
        return await self.get(key)

    async def mget(self, keys: Sequence[bytes]) -> list[Item | None]:
        if len(keys) > MAX_SCAN_LIMIT:
            raise TooLarge(f"{len(keys)} keys in one mget; the limit is {MAX_SCAN_LIMIT}")
        checked = [as_key(key) for key in keys]
        now = self._clock()
        return [
            None if (item := live(stored, now)) is None else to_item(item)
            for stored in await self._engine.get_many(checked)
        ]

    async def ttl(self, key: bytes) -> float | None:
        now = self._clock()
        stored = live(await self._engine.get(as_key(key)), now)
        if stored is None:
            raise NotFound("key not found", key=key)
        return None if stored.expires_at is None else max(0.0, stored.expires_at - now)

    async def scan(
        self,
        *,
        prefix: bytes | None = None,
        start: bytes | None = None,
        end: bytes | None = None,
        cursor: bytes | None = None,
        limit: int = 100,
    ) -> ScanPage:
        """Items in key order within a prefix or [start, end), ``limit`` per page; pass the
        returned cursor back for the next page (None: nothing more)."""
        limit = check_limit(limit)
        key_range = resolve_range(prefix=prefix, start=start, end=end, cursor=cursor)
        return await scan_page(self._engine, key_range, limit, self._clock())

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
        if not conditional:
            # A blind write reads nothing, so it needs no lock: ``submit`` orders it at once,
            # and a conditional writer reading meanwhile sees it in the overlay (``current``
            # re-checks the overlay after its read, with no await before its own submit).
            # A stamped one too, when the session cache says it is new (no await between
            # that check, the stamp and the submit).
            now = self._clock()
            if session is None:
                return await self._submit(
                    [put_mutation(key, raw, expiry(ttl, now), self._threshold)])
            if self._sessions.is_new(session, now):
                mutation = put_mutation(key, raw, expiry(ttl, now), self._threshold)
                return await self._submit(
                    [mutation, *self._sessions.stamp(session, _DONE, now)])

        async def decide(now: float) -> Decision:
            if conditional:
                current = live(await self._pipeline.current(key), now)
                error = condition_error(key, current, if_version=if_version, if_absent=if_absent)
                if error is not None:
                    return Decision([], error=error)
            return Decision([put_mutation(key, raw, expiry(ttl, now), self._threshold)])

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
            return Decision([Mutation(MutationKind.DELETE, key)], payload=True)

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
            mutation = put_mutation(key, str(result).encode(), expires_at, self._threshold)
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
                                      now + checked_ttl)])

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

        def mutations(now: float) -> list[Mutation]:
            expires_at = expiry(ttl, now)
            return [put_mutation(k, v, expires_at, self._threshold) for k, v in pairs]

        if session is None:
            return await self._submit(mutations(self._clock()))  # blind: no lock, as in put

        async def decide(now: float) -> Decision:
            return Decision(mutations(now))

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
            doomed = [k for k, item in zip(unique, current, strict=True) if live(item, now)]
            return Decision([Mutation(MutationKind.DELETE, k) for k in doomed],
                            payload=len(doomed))

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
        blind = is_blind(checked)
        if blind and session is None:
            # Only unconditional puts: nothing to read or compare, so, like ``mput``, no
            # lock; the entry is ordered the moment it is submitted.
            plan = plan_batch(checked, {}, now=self._clock(), threshold=self._threshold)
            version = await self._submit(plan.mutations)
            return BatchResult(version, tuple(_fill(plan.results, version)))
        keys = list(dict.fromkeys([op.key for op in checked]))

        async def decide(now: float) -> Decision:
            before: dict = {}
            if not blind:
                current = await self._pipeline.current_many(keys)
                before = {
                    k: None if item is None or (
                        item.expires_at is not None and item.expires_at <= now) else item
                    for k, item in zip(keys, current, strict=True)
                }  # live(item, now), inlined: one entry per key of the batch
            try:
                plan = plan_batch(checked, before, now=now, threshold=self._threshold)
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
            version = self.last_lsn
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

    # ------------------------------------------------------------------------- migration

    async def consistent_view(self) -> SnapshotView:
        """A consistent view of every row at ``applied_lsn`` (what a snapshot reads; writes
        go on meanwhile): an online migration streams the moving keys from it."""
        return await self._engine.snapshot_view()

    async def write_imported(self, mutations: list[Mutation]) -> int:
        """Order ``mutations`` (keys moving in from another shard, with their absolute
        expiry) as one entry of this shard's log; returns its LSN once it is applied under
        the current write concern. The caller decides what to import; nothing is checked.
        Imported session rows (exactly-once records moving with their writes) are not in
        the primary's session cache: it is rebuilt before the next stamped write."""
        async with self._lock:  # ordered after any conditional write that already read
            self._pipeline.check_writable()
            self._sessions.stale = True
            applied = self._submit(mutations)
        return await applied

    # ------------------------------------------------------------------------ maintenance

    @property
    def snapshotter(self) -> Snapshotter:
        """Snapshots, log retention and the low-disk guard (``snapshots/snapshotter.py``)."""
        return self._snapshotter

    async def snapshot_now(self) -> SnapshotMeta:
        """Take a snapshot at the applied LSN now (writes continue meanwhile)."""
        return await self._snapshotter.take()

    async def set_sweeper(self, enabled: bool) -> None:
        """Run the TTL sweeper or not: only a primary deletes expired keys (a replica gets
        its primary's deletes through the log). Starting needs ``ttl_sweep_interval_s > 0``."""
        if enabled:
            self._sweeper.start()
        else:
            await self._sweeper.stop()

    async def sweep_expired(self) -> int:
        """Run one TTL sweep round now; returns how many keys were deleted."""
        return await self._sweeper.sweep_once()

    def stats(self) -> StoreStats:
        snap = self._snapshotter
        return StoreStats(
            engine=self._engine.name,
            keys=self._engine.key_count,
            epoch=self.epoch,
            last_lsn=self.last_lsn,
            applied_lsn=self.applied_lsn,
            pending_writes=self._pipeline.pending,
            snapshot_lsn=None if snap.latest is None else snap.latest.lsn,
            snapshot_age_s=None if snap.latest_at is None else time.time() - snap.latest_at,
            wal_bytes_since_snapshot=snap.bytes_since,
            snapshots_taken=snap.taken,
            expired_swept=self._sweeper.swept,
            recovery=self._recovery,
            wal=self._wal.stats(),
            sessions=0 if self._sessions.stale else len(self._sessions),
            dedup_hits=self.dedup_hits,
            sessions_evicted=self._sessions.evicted,
        )


_DONE = Outcome()  # a write whose answer is its version alone


def _fill(results: list[dict], version: int) -> list[dict]:
    for result in results:
        if result["op"] == "put":
            result["version"] = version
    return results

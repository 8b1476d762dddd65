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
from collections.abc import Callable, Sequence

from shardkv.cluster.errors import InvalidArgument, NotFound, TooLarge, VersionMismatch
from shardkv.cluster.limits import MAX_SCAN_LIMIT, as_key, as_ttl, as_value
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.storage.commit_pipeline import CommitGate, CommitPipeline
from shardkv.node.storage.engines.engine import Engine
from shardkv.node.storage.recovery import recover
from shardkv.node.storage.scan_cursor import check_limit, resolve_range, scan_page, to_item
from shardkv.node.storage.snapshots.snapshot import SnapshotMeta, read_snapshot
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
        self._closed = False

    @classmethod
    async def open(cls, config: StoreConfig, *, clock: Clock = NODE_CLOCK.wall) -> Store:
        """Recover from ``config.data_dir`` (snapshot, then WAL replay) and start the
        background sweeper. ``clock`` is the wall clock used for TTLs and the entries'
        timestamps: the node's (skewable) one unless a test passes its own."""
        wal, engine, snapshot, report = await recover(config)
        store = cls(config, wal, engine, snapshot, report, clock)
        store._sweeper.start()
        return store

    async def close(self) -> None:
        """Finish in-flight writes, stop background work, close the log and the engine."""
        if self._closed:
            return
        self._closed = True
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
            applied = self._submit([])
        return await applied

    def submit_replicated(self, entry: WalEntry) -> asyncio.Future[int]:
        """Order an entry received from the primary (it carries its own LSN and epoch, and
        must be ``last_lsn + 1``); the future resolves when it is applied here."""
        if entry.epoch > self._pipeline.epoch:
            self._pipeline.epoch = entry.epoch
        applied = self._pipeline.submit_entry(entry)
        self._snapshotter.note_logged(self._pipeline.take_logged_bytes())
        return applied

    async def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the whole state with a snapshot (a replica too far behind its primary):
        the log restarts after the snapshot's LSN. Waits for writes in flight first."""
        async with self._lock:
            await self._pipeline.barrier()
            # The log first: a crash in between leaves an empty log and the snapshot file,
            # from which recovery loads the state (never old entries over the new state).
            await self._wal.restart_at(meta.lsn + 1, meta.epoch)
            await self._engine.load(read_snapshot(meta.path), meta.lsn)
            self._pipeline.reset(meta.lsn, meta.epoch)
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

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
    ) -> int:
        """Write ``value``; returns the new version. Raises VersionMismatch when a condition
        fails (nothing is written)."""
        key, raw, ttl = as_key(key), as_value(value, self._limits), as_ttl(ttl)
        if_version = check_conditions_args(if_version, if_absent)
        if if_version is None and not if_absent:
            # A blind write reads nothing, so it needs no lock: ``submit`` orders it at once,
            # and a conditional writer reading meanwhile sees it in the overlay (``current``
            # re-checks the overlay after its read, with no await before its own submit).
            mutation = put_mutation(key, raw, expiry(ttl, self._clock()), self._threshold)
            return await self._submit([mutation])
        async with self._lock:
            self._pipeline.check_writable()
            now = self._clock()
            current = live(await self._pipeline.current(key), now)
            error = condition_error(key, current, if_version=if_version, if_absent=if_absent)
            if error is None:
                mutation = put_mutation(key, raw, expiry(ttl, now), self._threshold)
                applied = self._submit([mutation])
        if error is not None:
            await self._pipeline.barrier()
            raise error
        return await applied

    async def delete(self, key: bytes, *, if_version: int | None = None) -> DeleteResult:
        """Delete the key. Deleting an absent key writes nothing and answers (False,
        last_lsn); ``if_version`` must match (0 = absent) or VersionMismatch is raised."""
        key = as_key(key)
        if_version = check_conditions_args(if_version, False)
        applied = None
        async with self._lock:
            self._pipeline.check_writable()
            current = live(await self._pipeline.current(key), self._clock())
            error = condition_error(key, current, if_version=if_version, if_absent=False)
            if error is None and current is not None:
                applied = self._submit([Mutation(MutationKind.DELETE, key)])
        if applied is not None:
            return DeleteResult(True, await applied)
        await self._pipeline.barrier()
        if error is not None:
            raise error
        return DeleteResult(False, self.last_lsn)

    async def incr(self, key: bytes, delta: int = 1) -> tuple[int, int]:
        """Add ``delta`` to the integer stored (as ASCII decimal) at ``key``; an absent key
        counts as 0. The key keeps its TTL. Returns (new value, version)."""
        key = as_key(key)
        error: InvalidArgument | None = None
        async with self._lock:
            self._pipeline.check_writable()
            current = live(await self._pipeline.current(key), self._clock())
            try:
                result = next_counter(key, current, delta)
            except InvalidArgument as exc:
                error = exc
            else:
                expires_at = None if current is None else current.expires_at
                mutation = put_mutation(key, str(result).encode(), expires_at, self._threshold)
                applied = self._submit([mutation])
        if error is not None:
            await self._pipeline.barrier()
            raise error
        return result, await applied

    async def expire(self, key: bytes, ttl: float) -> int:
        """Set the key's TTL (the value is kept); returns the new version."""
        key, checked_ttl = as_key(key), as_ttl(ttl)
        if checked_ttl is None:
            raise InvalidArgument("ttl must be a positive number of seconds")
        async with self._lock:
            self._pipeline.check_writable()
            now = self._clock()
            current = live(await self._pipeline.current(key), now)
            if current is not None:
                mutation = Mutation(
                    MutationKind.PUT, key, current.value, current.compressed, now + checked_ttl
                )
                applied = self._submit([mutation])
        if current is None:
            await self._pipeline.barrier()
            raise NotFound("key not found", key=key)
        return await applied

    async def mput(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None = None) -> int:
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
        expires_at = expiry(ttl, self._clock())
        mutations = [put_mutation(k, v, expires_at, self._threshold) for k, v in pairs]
        return await self._submit(mutations)  # blind writes: no lock, as in put

    async def mdelete(self, keys: Sequence[bytes]) -> tuple[int, int]:
        """Delete the keys that exist, in one atomic entry; returns (deleted, version)."""
        if not keys:
            raise InvalidArgument("mdelete needs at least one key")
        if len(keys) > self._limits.max_batch_ops:
            raise TooLarge(f"{len(keys)} keys; the limit is {self._limits.max_batch_ops}")
        unique = list(dict.fromkeys(as_key(key) for key in keys))
        async with self._lock:
            self._pipeline.check_writable()
            now = self._clock()
            current = await self._pipeline.current_many(unique)
            doomed = [k for k, item in zip(unique, current, strict=True) if live(item, now)]
            if doomed:
                applied = self._submit([Mutation(MutationKind.DELETE, k) for k in doomed])
        if not doomed:
            await self._pipeline.barrier()
            return 0, self.last_lsn
        return len(doomed), await applied

    async def batch(self, ops: Sequence[BatchOp]) -> BatchResult:
        """Apply puts and deletes atomically, as one entry. Every condition is checked
        against the state before the batch; if one fails, VersionMismatch names its
        ``index``, ``key`` and ``current_version`` and nothing is written."""
        return await self.batch_checked(check_batch(ops, self._limits))

    async def batch_checked(self, checked: Sequence[CheckedOp]) -> BatchResult:
        """``batch`` for ops already validated: the operation layer parses a request's ops
        from the wire straight into ``CheckedOp``s (every check ``check_batch`` makes, and
        more), so they are not checked a second time here. Callers holding ``BatchOp``s use
        ``batch``."""
        if not checked:
            raise InvalidArgument("a batch needs at least one operation")
        if is_blind(checked):
            # Only unconditional puts: nothing to read or compare, so, like ``mput``, no
            # lock; the entry is ordered the moment it is submitted.
            plan = plan_batch(checked, {}, now=self._clock(), threshold=self._threshold)
            version = await self._submit(plan.mutations)
            return BatchResult(version, tuple(_fill(plan.results, version)))
        keys = list(dict.fromkeys([op.key for op in checked]))
        error: VersionMismatch | None = None
        applied = None
        async with self._lock:
            self._pipeline.check_writable()
            now = self._clock()
            current = await self._pipeline.current_many(keys)
            before = {
                k: None if item is None or (
                    item.expires_at is not None and item.expires_at <= now) else item
                for k, item in zip(keys, current, strict=True)
            }  # live(item, now), inlined: one entry per key of the batch
            try:
                plan = plan_batch(checked, before, now=now, threshold=self._threshold)
            except VersionMismatch as exc:
                error = exc
            else:
                if plan.mutations:
                    applied = self._submit(plan.mutations)
        if applied is None:  # a failed condition, or only deletes of absent keys
            await self._pipeline.barrier()
            if error is not None:
                raise error
            return BatchResult(self.last_lsn, tuple(plan.results))
        version = await applied
        return BatchResult(version, tuple(_fill(plan.results, version)))

    def _submit(self, mutations: list[Mutation]) -> asyncio.Future[int]:
        applied = self._pipeline.submit(mutations)
        self._snapshotter.note_logged(self._pipeline.take_logged_bytes())
        return applied

    # ------------------------------------------------------------------------ maintenance

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
        )


def _fill(results: list[dict], version: int) -> list[dict]:
    for result in results:
        if result["op"] == "put":
            result["version"] = version
    return results

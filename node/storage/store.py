"""The Store: key-value operation semantics over a WAL and an engine.

Reads go to the engine, which only ever holds applied (durable, committed) entries, and hide
expired items by comparing ``expires_at`` with the clock. Writes (``store_writes.py``, a mixin
of ``Store``) are ordered by the commit pipeline under a short lock, or without one when they
read nothing; the pattern and its guarantees are described there.

``commit_pipeline.py`` holds the ordering machinery and the replication seam (the
commit gate); ``write_plan.py`` holds the pure decisions; ``recovery.py`` opens the
files; ``snapshots/snapshotter.py`` and ``ttl_sweeper.py`` are the background work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from shardkv.cluster.errors import NotFound, TooLarge
from shardkv.cluster.limits import MAX_SCAN_LIMIT, as_key
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.storage.commit_pipeline import CommitGate, CommitPipeline
from shardkv.node.storage.engines.engine import Engine, KeySelect, SnapshotView
from shardkv.node.storage.recovery import recover
from shardkv.node.storage.scan_cursor import (
    check_limit,
    resolve_range,
    scan_page,
    to_item,
)
from shardkv.node.storage.sessions import SessionIndex, drop_older_records, session_puts
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
from shardkv.node.storage.store_writes import StoreWrites
from shardkv.node.storage.ttl_sweeper import TtlSweeper
from shardkv.node.storage.write_plan import live
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


class Store(StoreWrites):
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
        self._sync_reads = engine.sync_reads
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
        """Why the log refuses writes (an I/O error: a full disk, a failed fsync), or None.
        A step-down in progress is not one (see ``CommitPipeline.storage_failure``)."""
        return self._pipeline.storage_failure

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

    def submit_replicated_batch(self, entries: Sequence[WalEntry]) -> asyncio.Future[int]:
        """``submit_replicated`` for a frame of consecutive entries: one future, resolved
        (to the last LSN) when all of them are applied here."""
        epoch = entries[-1].epoch
        if epoch > self._pipeline.epoch:
            self._pipeline.epoch = epoch
        self._sessions.stale = True  # their session rows are not in the primary's cache
        applied = self._pipeline.submit_entries(entries)
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

    # ------------------------------------------------------------------------- migration

    async def consistent_view(self) -> SnapshotView:
        """A consistent view of every row at ``applied_lsn`` (what a snapshot reads; writes
        go on meanwhile)."""
        return await self._engine.snapshot_view()

    async def migration_view(self, select: KeySelect,
                             slice_rows: int | None = None) -> SnapshotView:
        """The rows an online migration moves, selected by key before any row is read, each
        as of ``lsn`` or later, at most ``slice_rows`` read per slice of the event loop
        (``Engine.migration_view``)."""
        return await self._engine.migration_view(select, slice_rows)

    def migration_keys(self, select: KeySelect,
                       slice_rows: int | None = None) -> AsyncIterator[list[bytes]]:
        """The keys ``select`` keeps, a list at a time (``Engine.migration_keys``): what a
        migration's clean-up reads, rows undecoded."""
        return self._engine.migration_keys(select, slice_rows)

    async def write_imported(self, mutations: list[Mutation]) -> int:
        """Order ``mutations`` (keys moving in from another shard, with their absolute
        expiry) as one entry of this shard's log; returns its LSN once it is applied under
        the current write concern. The caller decides which keys to import. Imported
        session rows (exactly-once records moving with their writes) never replace a
        record of a higher ``seq`` held here (``drop_older_records``), and they are not in
        the primary's session cache: it is rebuilt before the next stamped write."""
        async with self._lock:  # ordered after any conditional write that already read
            self._pipeline.check_writable()
            # Stale before the read below: a stamped write now waits for this lock, so no
            # record is ordered between the read and the submit.
            self._sessions.stale = True
            sessions = session_puts(mutations)
            if sessions:
                held = await self._pipeline.current_many(sessions)
                mutations = drop_older_records(mutations, dict(zip(sessions, held,
                                                                   strict=True)))
                self._pipeline.check_writable()
            applied = self._submit(mutations)
        return await applied

    async def delete_moved(self, keys: list[bytes]) -> int:
        """Delete those of ``keys`` (read from this engine, so valid and distinct) that
        exist, as one entry, like ``mdelete`` (each delete logs the version it removes, for
        watches) but without its per-key checks, its limit or its lock: a migration's
        clean-up deletes a third of a shard, and nobody else writes those keys (the ring
        gives them to another shard). Lock-free as a blind write is: the versions are read
        in write order and submitted with no await in between. Returns how many existed."""
        versions = await self._pipeline.live_versions(keys, self._clock())
        delete = MutationKind.DELETE
        mutations = [Mutation(delete, key, prev_version=version)
                     for key, version in zip(keys, versions, strict=True) if version is not None]
        if mutations:
            await self._submit(mutations)
        return len(mutations)

    # ------------------------------------------------------------------------ maintenance

    @property
    def snapshotter(self) -> Snapshotter:
        """Snapshots, log retention and the low-disk guard (``snapshots/snapshotter.py``)."""
        return self._snapshotter

    async def snapshot_now(self) -> SnapshotMeta:
        """Take a snapshot at the applied LSN now (writes continue meanwhile)."""
        return await self._snapshotter.take()

    async def snapshot_for_replica(self) -> SnapshotMeta:
        """The snapshot a replica behind this node's log starts from.

        The latest one, when the log still holds every entry after it: the replica's log
        then starts where this node's does, so a watch that fails over to it finds the
        same history. After a migration raised the LSN floor that snapshot is the floor
        itself, and a fresh one (at "now") would leave the replica without the entries
        written since the floor: promoted, it answered a watch resuming there ``COMPACTED``
        (chaos ``reshard-faults``, seed 82). A new snapshot only when the log does not
        reach back to the latest one (or there is none)."""
        latest = self._snapshotter.latest
        wal = self._wal
        reaches = wal.first_lsn - 1 if wal.first_lsn else wal.last_lsn
        if latest is not None and latest.lsn >= reaches and latest.path.exists():
            return latest
        return await self.snapshot_now()

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

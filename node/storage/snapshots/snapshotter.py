"""Snapshot scheduling, log retention and the low-disk guard: disk use that follows the data.

A snapshot is taken in the background when ``retention.SnapshotTrigger`` says one is due (bytes
logged since the last one, or their ratio to its size); writes continue meanwhile (the engine
hands out a consistent view at an LSN). After the snapshot file is durable, the WAL segments
behind it are removed except a tail bounded in entries *and* bytes (``retention.py``), which
stays so that replicas a little behind can catch up from the log instead of a full snapshot;
then snapshots beyond ``keep_snapshots`` are pruned.

When free space runs low, the ``DiskGuard`` asks for a snapshot with a *hard* trim (no tail
kept behind it), and below its floor refuses writes.

Only one snapshot runs at a time (a lock); a request while one runs is a no-op, since the
running one resets the byte count when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.disk_guard import DiskGuard, auto_low_disk_bytes
from shardkv.node.storage.disk_usage import DiskUsage, free_bytes, measure
from shardkv.node.storage.engines.engine import Engine
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.storage.engines.sqlite_compaction import CompactionReport
from shardkv.node.storage.snapshots.retention import (
    SegmentExtent,
    SnapshotTrigger,
    retain_budget,
    wal_cut_lsn,
)
from shardkv.node.storage.snapshots.snapshot import (
    SnapshotMeta,
    remove_old_snapshots,
    write_snapshot,
)
from shardkv.node.storage.store_model import StoreConfig
from shardkv.node.wal.write_ahead_log import WriteAheadLog

logger = logging.getLogger(__name__)

LOW_DISK_SNAPSHOT_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """What one snapshot did (the admin endpoint's answer, the log line)."""

    lsn: int
    keys: int
    bytes: int
    reason: str
    seconds: float
    wal_segments_removed: int
    wal_bytes_after: int
    first_lsn_after: int

    def to_dict(self) -> dict[str, int | float | str]:
        return {name: getattr(self, name) for name in self.__slots__}


class Snapshotter:
    def __init__(
        self,
        config: StoreConfig,
        engine: Engine,
        wal: WriteAheadLog,
        *,
        epoch: Callable[[], int],
        latest: SnapshotMeta | None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._wal = wal
        self._epoch = epoch
        self.latest = latest
        self.latest_at: float | None = None if latest is None else _mtime(latest)
        self.latest_bytes = 0 if latest is None else _size(latest)
        self.taken = 0
        self.bytes_since = 0
        self.running = False
        self.last_report: SnapshotReport | None = None
        self.compacting = False
        self.compactions = 0
        self.last_compaction: CompactionReport | None = None
        self._trigger = SnapshotTrigger(
            config.snapshot_wal_bytes, config.snapshot_wal_ratio, config.snapshot_min_wal_bytes
        )
        self._hard_trim = False
        self._low_disk_at = float("-inf")
        self._skipped_for_room = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Set by WAL archiving (node/backup/wal_archiver.py): entries from this LSN on are
        # not archived yet, so a (soft) trim keeps them.
        self.hold_before: Callable[[], int] | None = None
        low = config.low_disk_bytes
        if low is None:
            low = auto_low_disk_bytes(free_bytes(config.data_dir)[1])
        self.guard = DiskGuard(config.data_dir, low, on_low=self._on_low_disk)

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a snapshot runs; engine maintenance (compaction) takes it too."""
        return self._lock

    def note_logged(self, nbytes: int) -> None:
        """Count bytes logged; start a background snapshot when one is due."""
        self.bytes_since += nbytes
        self.guard.note_logged(nbytes)
        reason = self._trigger.due(self.bytes_since, self.latest_bytes)
        if reason is not None:
            self._start(reason)

    def _start(self, reason: str) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        if not self._fits():
            return
        self._task = asyncio.create_task(self._take_logged(reason), name="snapshot")

    def _fits(self) -> bool:
        """Whether a background snapshot would stay above the disk floor while written. Its
        size is at most the last one plus what was logged since (or, with none yet, the
        whole log): a snapshot that cannot fit would only fail with ENOSPC halfway and eat
        the room the WAL needs meanwhile."""
        if not self.guard.low_bytes:
            return True
        estimate = (self.latest_bytes + self.bytes_since if self.latest is not None
                    else self._wal.stats().bytes)
        if self.guard.free_estimate - estimate * 5 // 4 >= self.guard.low_bytes:
            return True
        if not self._skipped_for_room:
            logger.warning("snapshot skipped: it would not fit above the disk floor",
                           extra=log_fields(estimate_bytes=estimate,
                                            free_bytes=self.guard.free_estimate,
                                            floor_bytes=self.guard.low_bytes))
        self._skipped_for_room = True
        return False

    def _on_low_disk(self) -> None:
        """The guard saw free space under twice its floor: snapshot and drop the whole log
        behind it, unless nothing was logged since the last snapshot (nothing to gain); at
        most every ``LOW_DISK_SNAPSHOT_INTERVAL_S``, so a disk filled by something else does
        not turn into a loop of snapshots."""
        now = time.monotonic()
        if now - self._low_disk_at < LOW_DISK_SNAPSHOT_INTERVAL_S:
            return
        if self.bytes_since or len(self._wal.segment_extents()) > 1:
            self._low_disk_at = now
            self._hard_trim = True
            self._start("low_disk")

    async def _take_logged(self, reason: str) -> None:
        try:
            await self.take(reason)
        except Exception as exc:
            # The log keeps everything a snapshot would have let us drop, so a failed
            # snapshot costs disk space and recovery time, never data; retried when next due.
            logger.error("snapshot failed", extra=log_fields(error=repr(exc), reason=reason))

    async def take(self, reason: str = "requested") -> SnapshotMeta:
        return (await self.take_report(reason))[0]

    async def take_report(self, reason: str = "requested") -> tuple[SnapshotMeta, SnapshotReport]:
        """Snapshot at the applied LSN now, trim the log and old snapshots behind it."""
        async with self._lock:
            self.running = True
            try:
                return await self._take_locked(reason)
            finally:
                self.running = False

    async def _take_locked(self, reason: str) -> tuple[SnapshotMeta, SnapshotReport]:
        started = time.perf_counter()
        hard, self._hard_trim = self._hard_trim, False
        self._skipped_for_room = False
        self.bytes_since = 0
        view = await self._engine.snapshot_view()
        meta = await write_snapshot(self._config.snapshot_dir, view.lsn, self._epoch(), view.rows)
        self.latest, self.latest_at = meta, time.time()
        self.latest_bytes = await asyncio.to_thread(_size, meta)
        self.taken += 1
        await asyncio.to_thread(
            remove_old_snapshots, self._config.snapshot_dir, self._config.keep_snapshots
        )
        removed = await self._trim(meta.lsn, hard=hard)
        report = SnapshotReport(
            lsn=meta.lsn, keys=meta.count, bytes=self.latest_bytes, reason=reason,
            seconds=round(time.perf_counter() - started, 4), wal_segments_removed=removed,
            wal_bytes_after=self._wal.stats().bytes, first_lsn_after=self._wal.first_lsn,
        )
        self.last_report = report
        logger.info("snapshot written", extra=log_fields(path=str(meta.path), hard_trim=hard,
                                                         **report.to_dict()))
        return meta, report

    async def _trim(self, snapshot_lsn: int, *, hard: bool) -> int:
        """Remove the log behind ``snapshot_lsn`` beyond the retained tail (none if hard)."""
        config = self._config
        if hard:
            entries, budget = 0, 0
        else:
            entries = config.retain_wal_entries
            free, _total = await asyncio.to_thread(free_bytes, config.data_dir)
            budget = retain_budget(config.retain_wal_bytes, self.latest_bytes, free,
                                   self.guard.low_bytes)
        extents = [SegmentExtent(first, size) for first, size in self._wal.segment_extents()]
        cut = wal_cut_lsn(extents, self._wal.last_lsn, snapshot_lsn, entries, budget)
        if self.hold_before is not None and not hard:
            cut = min(cut, self.hold_before())
        return await self._wal.remove_before(cut) if cut > 1 else 0

    async def compact(self) -> CompactionReport:
        """Give the SQLite engine's free pages back (``engines/sqlite_compaction.py``); under
        the snapshot lock, so no snapshot reads the database while it is rebuilt."""
        if not isinstance(self._engine, SqliteEngine):
            raise InvalidArgument(
                f"compact applies to the sqlite engine; this node runs {self._engine.name!r}, "
                "whose disk use is the WAL and snapshots (take a snapshot instead)"
            )
        async with self._lock:
            self.compacting = True
            try:
                report = await self._engine.compact()
            finally:
                self.compacting = False
        self.compactions += 1
        self.last_compaction = report
        return report

    def installed(self, meta: SnapshotMeta) -> None:
        """A snapshot received from elsewhere became the state."""
        self.latest, self.latest_at = meta, time.time()
        self.latest_bytes = _size(meta)
        self.bytes_since = 0

    def disk_usage(self) -> DiskUsage:
        return measure(self._config.data_dir)

    async def close(self) -> None:
        """Let a running snapshot finish (cancelling it midway would only waste the work,
        since a partial snapshot file is never renamed into place)."""
        self._closed = True
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await task


def _mtime(meta: SnapshotMeta) -> float | None:
    try:
        return meta.path.stat().st_mtime
    except OSError:
        return None


def _size(meta: SnapshotMeta) -> int:
    try:
        return meta.path.stat().st_size
    except OSError:
        return 0

"""Snapshot scheduling: bound recovery time by the bytes logged since the last snapshot.

A snapshot is taken in the background once ``snapshot_wal_bytes`` have been logged since the
previous one; writes continue meanwhile (the engine hands out a consistent view at an LSN).
After the snapshot file is durable (written under a temporary name, fsynced, renamed), the
WAL segments that only hold entries at or below its LSN are removed, except the newest
``retain_wal_entries`` entries, which stay so that replicas a little behind can catch up from
the log instead of a full snapshot; then snapshots beyond ``keep_snapshots`` are pruned.

Only one snapshot runs at a time (a lock); a request while one runs is a no-op, since the
running one resets the byte count when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.engines.engine import Engine
from shardkv.node.storage.snapshots.snapshot import (
    SnapshotMeta,
    remove_old_snapshots,
    write_snapshot,
)
from shardkv.node.storage.store_model import StoreConfig
from shardkv.node.wal.write_ahead_log import WriteAheadLog

logger = logging.getLogger(__name__)


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
        self.taken = 0
        self.bytes_since = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def note_logged(self, nbytes: int) -> None:
        """Count bytes logged; start a background snapshot when the threshold is crossed."""
        self.bytes_since += nbytes
        if (
            self.bytes_since >= self._config.snapshot_wal_bytes
            and not self._closed
            and (self._task is None or self._task.done())
        ):
            self._task = asyncio.create_task(self._take_logged(), name="snapshot")

    async def _take_logged(self) -> None:
        try:
            await self.take()
        except Exception as exc:
            # The log keeps everything a snapshot would have let us drop, so a failed
            # snapshot costs disk space and recovery time, never data; retried next threshold.
            logger.error("snapshot failed", extra=log_fields(error=repr(exc)))

    async def take(self) -> SnapshotMeta:
        async with self._lock:
            started = time.perf_counter()
            self.bytes_since = 0
            view = await self._engine.snapshot_view()
            meta = await write_snapshot(
                self._config.snapshot_dir, view.lsn, self._epoch(), view.rows
            )
            self.latest, self.latest_at = meta, time.time()
            self.taken += 1
            await asyncio.to_thread(
                remove_old_snapshots, self._config.snapshot_dir, self._config.keep_snapshots
            )
            cut = min(meta.lsn + 1, self._wal.last_lsn - self._config.retain_wal_entries + 1)
            removed = await self._wal.remove_before(cut) if cut > 1 else 0
            logger.info(
                "snapshot written",
                extra=log_fields(
                    lsn=meta.lsn,
                    keys=meta.count,
                    path=str(meta.path),
                    wal_segments_removed=removed,
                    seconds=round(time.perf_counter() - started, 4),
                ),
            )
            return meta

    def installed(self, meta: SnapshotMeta) -> None:
        """A snapshot received from elsewhere became the state."""
        self.latest, self.latest_at = meta, time.time()
        self.bytes_since = 0

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

"""Point-in-time restore planning: which base backup, which archived chunks, and whether the
time asked for is inside the restorable window.

The state at time ``T`` of a shard is its rows in a base backup taken before ``T``, plus its
archived entries after the backup's LSN in log order, up to the last one written at or
before ``T`` (the entry's ``ts``: the primary's clock when it ordered the write). Replay
stops at the first entry stamped after ``T``, so the result is always a prefix of the
shard's history. Every write acknowledged before ``T`` is in it (a write is ordered, then
stamped, then acknowledged); no write stamped after ``T`` is; a write in flight at ``T``
may be either, as it may for a client. Shards are cut independently: across shards the
precision is the skew between their primaries' clocks.

The window of a shard ends at its newest contiguous archived entry, or later when the
archiver's progress marker says nothing was written since (an idle shard); the cluster's
window ends at the earliest of its shards' ends, and starts when the oldest base backup is
consistent (after its last shard's view).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shardkv.backup.repository.catalog import backup_ids, load_manifest
from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.errors import BackupError
from shardkv.backup.repository.manifest import Manifest
from shardkv.backup.repository.wal_archive import (
    ArchivedChunk,
    covering,
    list_chunks,
    read_progress,
)


@dataclass(frozen=True)
class ShardReplay:
    shard: str
    from_lsn: int  # the base backup's LSN: replay starts after it
    chunks: list[ArchivedChunk]
    window_end: float


@dataclass(frozen=True)
class RestorePlan:
    manifest: Manifest
    at: float | None
    replays: dict[str, ShardReplay]

    @property
    def window(self) -> tuple[float, float]:
        start = self.manifest.consistent_at
        end = min((r.window_end for r in self.replays.values()), default=start)
        return start, end


def shard_replay(dest: Destination, manifest: Manifest, shard: str) -> ShardReplay:
    base = manifest.shards[shard]
    chunks = covering(list_chunks(dest, shard), base.lsn)
    end_lsn = chunks[-1].last_lsn if chunks else base.lsn
    end = chunks[-1].last_ts if chunks else base.taken_at
    progress = read_progress(dest, shard)
    if progress is not None and progress.lsn <= end_lsn:
        # Nothing was archived after end_lsn up to progress.at, and end_lsn covers it.
        end = max(end, progress.at)
    return ShardReplay(shard, base.lsn, chunks, end)


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def plan_restore(dest: Destination, backup_id: str | None, at: float | None) -> RestorePlan:
    """The base backup (``backup_id``, else the newest one consistent at ``at``, else the
    newest) and, with ``at``, the chunks to replay; ``BackupError`` when ``at`` is outside
    the window."""
    complete, _ = backup_ids(dest)
    if not complete:
        raise BackupError(f"no backup in {dest.url}")
    if backup_id is not None:
        manifest = load_manifest(dest, backup_id)
    elif at is None:
        manifest = load_manifest(dest, complete[-1])
    else:
        manifests = [load_manifest(dest, bid) for bid in complete]
        before = [m for m in manifests if m.consistent_at <= at]
        if not before:
            oldest = min(m.consistent_at for m in manifests)
            raise BackupError(f"--at {fmt_time(at)} is before the restorable window: the "
                              f"oldest backup is consistent from {fmt_time(oldest)}")
        manifest = max(before, key=lambda m: m.consistent_at)
    if at is None:
        return RestorePlan(manifest, None, {})
    replays = {shard: shard_replay(dest, manifest, shard) for shard in manifest.shards}
    plan = RestorePlan(manifest, at, replays)
    start, end = plan.window
    if at < start:
        raise BackupError(f"--at {fmt_time(at)} is before backup {manifest.backup_id}, "
                          f"consistent from {fmt_time(start)}")
    if at > end:
        raise BackupError(f"--at {fmt_time(at)} is after the restorable window, which ends "
                          f"at {fmt_time(end)} (the newest archived write; is WAL archiving "
                          f"on, with --archive-to?)")
    return plan

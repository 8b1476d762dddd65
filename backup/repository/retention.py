"""Which backups to keep: ``--keep N`` (the newest N) and ``--keep-days D`` (those younger
than D days). With both, a backup is kept if either keeps it; the newest backup is always
kept, so a retention run can never leave a destination without a backup.

Archived WAL chunks older than the oldest kept backup of their shard can no longer be
replayed on anything, so they go with it (``prunable_chunks``).
"""

from __future__ import annotations

from collections.abc import Sequence

from shardkv.backup.repository.wal_archive import ArchivedChunk

DAY_S = 86_400.0


def doomed_backups(backups: Sequence[tuple[str, float]], *, keep: int | None,
                   keep_days: float | None, now: float) -> list[str]:
    """Ids to delete among ``(id, created_at)``; nothing when neither rule is given."""
    if keep is None and keep_days is None:
        return []
    if keep is not None and keep < 1:
        raise ValueError("--keep must be at least 1")
    if keep_days is not None and keep_days < 0:
        raise ValueError("--keep-days must not be negative")
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    doomed = []
    for rank, (backup_id, created_at) in enumerate(newest_first):
        if rank == 0:
            continue
        by_count = keep is not None and rank < keep
        by_age = keep_days is not None and now - created_at < keep_days * DAY_S
        if not (by_count or by_age):
            doomed.append(backup_id)
    return doomed


def prunable_chunks(chunks: Sequence[ArchivedChunk], oldest_kept_lsn: int) -> list[ArchivedChunk]:
    """Chunks wholly at or before the oldest kept backup's LSN for their shard."""
    return [c for c in chunks if c.last_lsn <= oldest_kept_lsn]

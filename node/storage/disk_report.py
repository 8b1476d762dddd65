"""One picture of a store's disk: use by kind, free space, the retained log, the newest
snapshot, the guard and compaction. Shared by ``GET /v1/disk``, ``ping`` (for
``shardkv status``) and the CLI, so every view of the disk says the same thing."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardkv.node.storage.store import Store


def retained_wal(store: Store) -> tuple[int, int]:
    """(entries, bytes) the WAL holds now."""
    wal = store.wal
    first = wal.first_lsn
    entries = wal.last_lsn - first + 1 if first else 0
    return entries, wal.stats().bytes


def disk_report(store: Store) -> dict[str, Any]:
    snap = store.snapshotter
    usage = snap.disk_usage()
    entries, wal_bytes = retained_wal(store)
    latest = snap.latest
    return {
        "engine": store.config.engine,
        **usage.to_dict(),
        "wal": {"retained_entries": entries, "retained_bytes": wal_bytes,
                "first_lsn": store.wal.first_lsn, "last_lsn": store.wal.last_lsn,
                "bytes_since_snapshot": snap.bytes_since},
        "snapshot": {
            "lsn": None if latest is None else latest.lsn,
            "bytes": snap.latest_bytes,
            "age_s": None if snap.latest_at is None else round(time.time() - snap.latest_at, 3),
            "running": snap.running,
            "taken": snap.taken,
            "last": None if snap.last_report is None else snap.last_report.to_dict(),
        },
        "guard": {"floor_bytes": snap.guard.low_bytes, "refusing": snap.guard.refusing,
                  "refused": snap.guard.refused},
        "compaction": {
            "running": snap.compacting, "count": snap.compactions,
            "last": None if snap.last_compaction is None else snap.last_compaction.to_dict(),
        },
    }


def disk_summary(store: Store) -> dict[str, int]:
    """The few figures ``ping`` carries: bytes used by the store and free on its disk."""
    usage = store.snapshotter.disk_usage()
    return {"used_bytes": usage.used_bytes, "free_bytes": usage.free_bytes}

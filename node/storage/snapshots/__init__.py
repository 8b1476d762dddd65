"""Snapshots: the engine's state at an LSN, zstd-compressed, checksummed, renamed into place."""

from shardkv.node.storage.snapshots.snapshot import (
    SnapshotCorrupt,
    SnapshotMeta,
    latest_valid_snapshot,
    read_snapshot,
    write_snapshot,
)

__all__ = [
    "SnapshotCorrupt",
    "SnapshotMeta",
    "latest_valid_snapshot",
    "read_snapshot",
    "write_snapshot",
]

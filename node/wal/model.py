"""The WAL's public vocabulary: durability policy, options, statistics, and its errors.

Kept apart from ``wal.py`` so configuration and metrics code can name these without
importing the log's machinery. ``shardkv.node.wal.write_ahead_log`` re-exports all of them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from shardkv.node.wal.segment import WalCorruption

__all__ = [
    "FsyncPolicy",
    "LsnCompacted",
    "WalCorruption",
    "WalFailed",
    "WalLocked",
    "WalOptions",
    "WalStats",
]

MIN_SEGMENT_BYTES = 256


class FsyncPolicy(enum.StrEnum):
    """When an append counts as durable: ``always`` after the group's fdatasync (group
    commit), ``interval`` after its write() with a background fdatasync every
    ``fsync_interval_ms``, ``never`` after its write() (tests and caches only)."""

    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


@dataclass(frozen=True)
class WalOptions:
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 100
    segment_bytes: int = 64 << 20
    on_sync: Callable[[float, int, int], None] | None = None  # (seconds, entries, bytes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        if self.fsync_interval_ms <= 0:
            raise ValueError(f"fsync_interval_ms must be positive, got {self.fsync_interval_ms}")
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(
                f"segment_bytes must be at least {MIN_SEGMENT_BYTES}, got {self.segment_bytes}"
            )


@dataclass(frozen=True, slots=True)
class WalStats:
    """A snapshot of the log's counters (``WriteAheadLog.stats()``)."""

    segments: int
    bytes: int
    appended_entries: int
    appended_bytes: int
    syncs: int
    sync_seconds_total: float
    last_group_size: int
    max_group_size: int


class WalFailed(Exception):
    """The log hit an I/O error (or was closed) and accepts nothing more."""


class WalLocked(WalFailed):
    """Another process (or another open log in this one) holds the WAL directory: two
    writers appending to one log would interleave records and corrupt it."""


class LsnCompacted(LookupError):
    """The entries asked for were removed from the log (behind a snapshot)."""

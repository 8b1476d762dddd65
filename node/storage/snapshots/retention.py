"""How much log to keep behind a snapshot, and when the next snapshot is due.

Pure arithmetic, apart from the snapshotter that acts on it, so the rules can be read and
tested on their own:

- **Retention** keeps the newest ``retain_wal_entries`` entries *and* at most
  ``retain_wal_bytes`` of segments behind the newest snapshot, whichever is less: an entry
  count alone scales with the batch size (one ``mput`` of 1,000 values is one entry), so it
  cannot bound disk use. Without a configured byte budget it is the larger of 64 MiB and the
  newest snapshot's size (a replica that needs more log than a snapshot is cheaper served by
  the snapshot), never more than half the disk's free space above the low-disk floor.
- **Snapshots** are due after ``snapshot_wal_bytes`` logged since the last one, or earlier,
  after ``snapshot_wal_ratio`` times the last snapshot's size (but at least
  ``snapshot_min_wal_bytes``): an overwrite-heavy workload logs many times its live data, and
  a snapshot then replaces a log far bigger than itself.

Removal is by whole segments, so the retained log is at most the byte budget plus the active
segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_RETAIN_FLOOR_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class SegmentExtent:
    """One WAL segment as retention sees it: its first LSN and its size in bytes."""

    first_lsn: int
    size: int


def retain_budget(
    configured: int | None, snapshot_bytes: int, free_bytes: int, low_disk_bytes: int
) -> int:
    """The byte budget for log kept behind a snapshot (see the module docstring)."""
    wanted = configured if configured is not None else max(DEFAULT_RETAIN_FLOOR_BYTES,
                                                           snapshot_bytes)
    headroom = max(0, (free_bytes - low_disk_bytes) // 2)
    return min(wanted, headroom)


def wal_cut_lsn(
    segments: Sequence[SegmentExtent],
    last_lsn: int,
    snapshot_lsn: int,
    retain_entries: int,
    retain_bytes: int,
) -> int:
    """The LSN below which whole segments may be removed: never past the snapshot; keeps the
    newest ``retain_entries`` entries unless they exceed ``retain_bytes`` of segments (the
    active segment always stays, whatever its size)."""
    by_entries = last_lsn - retain_entries + 1
    by_bytes = _bytes_cut(segments, retain_bytes)
    return max(1, min(snapshot_lsn + 1, max(by_entries, by_bytes)))


def _bytes_cut(segments: Sequence[SegmentExtent], retain_bytes: int) -> int:
    """First LSN of the oldest segment such that it and every newer one, the active one
    aside, fit in ``retain_bytes``."""
    if not segments:
        return 1
    kept = 0
    cut = segments[-1].first_lsn  # the active segment is never removed
    for segment in reversed(segments[:-1]):
        kept += segment.size
        if kept > retain_bytes:
            break
        cut = segment.first_lsn
    return cut


@dataclass(frozen=True, slots=True)
class SnapshotTrigger:
    """When a snapshot is due; see the module docstring. ``ratio`` 0 turns the
    ratio rule off (bytes only, as before)."""

    wal_bytes: int
    ratio: float
    min_wal_bytes: int

    def due(self, bytes_since: int, snapshot_bytes: int) -> str | None:
        """Why a snapshot is due now (``"wal_bytes"`` or ``"ratio"``), or None. With no
        snapshot yet, ``snapshot_bytes`` is 0: the first one comes after ``min_wal_bytes``."""
        if bytes_since >= self.wal_bytes:
            return "wal_bytes"
        if self.ratio > 0 and bytes_since >= max(
            self.min_wal_bytes, self.ratio * snapshot_bytes
        ):
            return "ratio"
        return None

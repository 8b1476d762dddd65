"""The blocking file work behind the WAL's maintenance calls: cutting, removing, restarting.

``truncate_after``, ``remove_before`` and ``restart_at`` (``write_ahead_log.py``) take the
log's I/O lock on the event loop and then run these in a worker thread. Each does its file
operations in the one order that leaves a valid log if the process dies midway, which is the
reason they live together:

- cutting a suffix unlinks the newest segments first, so a crash leaves a prefix;
- removing old segments (compaction, a restart's leftovers) unlinks the oldest first, so a
  crash leaves a suffix;
- every unlink is made durable with a directory fsync before the caller moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from shardkv.cluster.durable_file import fsync_dir, truncate_durably
from shardkv.node.wal.log_view import LogSegment
from shardkv.node.wal.segment import (
    FLAG_RESTART,
    Checkpoint,
    SegmentHeader,
    SegmentScan,
    WalCorruption,
    create_segment,
    scan_segment,
)


def cut_after(
    directory: Path,
    segments: Sequence[LogSegment],
    checkpoints: dict[int, list[Checkpoint]],
    lsn: int,
) -> tuple[list[LogSegment], dict[int, list[Checkpoint]], SegmentScan]:
    """Drop every entry above ``lsn``, durably: the segments after the one holding ``lsn``
    are unlinked (newest first) and that one is truncated after ``lsn``. Returns the kept
    segments, their checkpoints, and the scan of the new newest segment (where appending
    resumes)."""
    keep = max(i for i, s in enumerate(segments) if s.first_lsn <= lsn + 1)
    for seg in reversed(segments[keep + 1 :]):  # newest first: a crash leaves a prefix
        seg.path.unlink()
    fsync_dir(directory)
    target = segments[keep]
    scan = scan_segment(target.path, until_lsn=lsn)
    if scan.last_lsn != lsn:
        raise WalCorruption(target.path, scan.end, f"lsn {lsn} not found to cut after")
    truncate_durably(target.path, scan.end)
    kept = [*segments[:keep], replace(target, size=scan.end)]
    kept_checkpoints = {s.seq: checkpoints.get(s.seq, []) for s in segments[:keep]}
    kept_checkpoints[target.seq] = list(scan.checkpoints)
    return kept, kept_checkpoints, scan


def create_restart_segment(directory: Path, seq: int, next_lsn: int,
                           epoch: int) -> tuple[LogSegment, int]:
    """Create (durably) a segment flagged as a restart whose first entry will be
    ``next_lsn``: recovery deletes every older segment it finds next to it, so the restart
    finishes even if the process dies before ``unlink_oldest_first`` has run. Returns it
    and the CRC chain's seed for its first entry."""
    header = SegmentHeader(seq, next_lsn, epoch, 0, FLAG_RESTART)
    path, size, crc = create_segment(directory, header)
    return LogSegment(header.seq, next_lsn, path, size), crc


def unlink_oldest_first(directory: Path, segments: Sequence[LogSegment]) -> None:
    """Remove ``segments`` (oldest first: a crash leaves a suffix, still a valid log) and
    make the removal durable."""
    for seg in segments:
        seg.path.unlink(missing_ok=True)
    fsync_dir(directory)

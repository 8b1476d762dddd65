"""Opening a WAL directory: check every segment and apply the rule of the tail.

The rule (etcd's, made stricter by the header checksum of ``framing.py``):

- Damage in the newest segment after which no intact record exists (a short or zeroed
  record, or a checksum mismatch in its last record) is an interrupted write. The file is
  copied aside once (``<name>.broken-<offset>``), truncated at the damaged record, and what
  was dropped is logged. A bit flip inside the last record cannot be told from a torn write
  of it, so it is treated the same: that record was the newest one and, if it had been
  acknowledged, the replicas hold it.
- Any other damage (in an older segment; with an intact record after it; a break in the LSN
  sequence, in the segment numbering or in the CRC chain between segments) raises
  ``WalCorruption`` naming the file and offset: acknowledged data may lie beyond it, so the
  node refuses to start rather than silently drop it.

Also finished here: a ``restart_at`` interrupted by a crash (segments older than the newest
restart segment are deleted) and a segment creation interrupted before its rename (``*.tmp``
files are deleted: they were never part of the log).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from shardkv.cluster.durable_file import (
    ensure_dir,
    fsync_dir,
    install,
    sync_file,
    truncate_durably,
)
from shardkv.cluster.structured_log import log_fields
from shardkv.node.wal.framing import DamageKind
from shardkv.node.wal.segment import (
    TMP_SUFFIX,
    Checkpoint,
    SegmentHeader,
    SegmentScan,
    WalCorruption,
    create_segment,
    list_segment_files,
    scan_segment,
)

log = logging.getLogger("shardkv.node.wal.write_ahead_log")


@dataclass(frozen=True, slots=True)
class RecoveredSegment:
    seq: int
    first_lsn: int
    path: Path
    size: int
    checkpoints: tuple[Checkpoint, ...]


@dataclass(frozen=True, slots=True)
class RecoveredLog:
    """The checked log: its segments (oldest first) and where appending resumes."""

    segments: list[RecoveredSegment]
    crc: int  # chain seed for the next record of the newest segment
    last_lsn: int
    last_epoch: int
    tail_entries: int  # entries in the newest segment


def recover_log(directory: Path) -> RecoveredLog:
    """Check (and where the rule allows, repair) the log in ``directory``, creating an empty
    one if there is none. Blocking: run it in a thread."""
    ensure_dir(directory)
    for leftover in directory.glob("*" + TMP_SUFFIX):
        leftover.unlink()
    files = list_segment_files(directory)
    if not files:
        path, size, crc = create_segment(directory, SegmentHeader(1, 1))
        return RecoveredLog([RecoveredSegment(1, 1, path, size, ())], crc, 0, 0, 0)
    scans = [scan_segment(path, newest=i == len(files) - 1) for i, (_, _, path) in enumerate(files)]
    restart = max((i for i, s in enumerate(scans) if s.header.restart), default=0)
    for scan in scans[:restart]:
        scan.path.unlink()
    if restart:
        fsync_dir(directory)
        log.warning("finished an interrupted WAL restart", extra=log_fields(removed=restart))
    scans = scans[restart:]
    for prev, scan in itertools.pairwise(scans):
        if prev.damage is not None:
            raise WalCorruption(prev.path, prev.damage.offset, prev.damage.reason)
        check_link(prev, scan)
    newest = scans[-1]
    if newest.damage is not None:
        if newest.damage.kind is not DamageKind.TORN:
            raise WalCorruption(newest.path, newest.damage.offset, newest.damage.reason)
        repair_tail(newest)
    segments = [
        RecoveredSegment(
            s.header.seq,
            s.first_lsn,
            s.path,
            s.end if s is newest else s.file_size,
            s.checkpoints,
        )
        for s in scans
    ]
    return RecoveredLog(segments, newest.crc, newest.last_lsn, newest.last_epoch, newest.entries)


def check_link(prev: SegmentScan, scan: SegmentScan) -> None:
    """Raise ``WalCorruption`` unless ``scan`` continues ``prev`` exactly."""
    if scan.header.seq != prev.header.seq + 1:
        raise WalCorruption(scan.path, 0, f"segment {prev.header.seq + 1} is missing")
    if scan.first_lsn != prev.last_lsn + 1:
        raise WalCorruption(
            scan.path, 0, f"starts at lsn {scan.first_lsn}, previous ends at {prev.last_lsn}"
        )
    if scan.header.prev_crc != prev.crc:
        raise WalCorruption(scan.path, 0, "CRC chain broken: previous segment differs")


def repair_tail(scan: SegmentScan) -> None:
    """Copy the segment aside, cut it at the damaged record, and log what was dropped."""
    damage = scan.damage
    assert damage is not None
    with scan.path.open("rb") as f:
        f.seek(damage.offset)
        partial = bool(f.read().strip(b"\x00"))
    aside = scan.path.with_name(f"{scan.path.name}.broken-{damage.offset}")
    copied = copy_aside(scan.path, aside)
    truncate_durably(scan.path, damage.offset)
    log.warning(
        "WAL torn tail repaired: truncated the newest segment",
        extra=log_fields(
            path=str(scan.path),
            offset=damage.offset,
            dropped_bytes=scan.file_size - damage.offset,
            dropped_records=1 if partial else 0,
            reason=damage.reason,
            last_lsn=scan.last_lsn,
            copy=str(aside) if copied else None,
        ),
    )


def copy_aside(path: Path, aside: Path) -> bool:
    """Copy ``path`` to ``aside`` through a temporary name and a rename, so that a copy
    that exists is whole. On a full disk the copy is skipped with a warning (the truncation
    itself needs no space, and a node that cannot start helps nobody). True when a whole
    copy exists afterwards."""
    if aside.exists() and aside.stat().st_size == path.stat().st_size:
        return True
    tmp = aside.with_name(aside.name + ".tmp")
    try:
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            sync_file(f)
        install(tmp, aside)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("WAL torn tail: no room to keep a copy of the damaged segment; "
                    "truncating without one", extra=log_fields(path=str(path),
                                                               error=str(exc)))
        return False


"""Offline check of a node's data directory (``shardkv node verify --data-dir DIR``).

Reads everything and changes nothing: every WAL segment (framing, checksums, the CRC chain
between segments, LSN continuity, every entry decoded), every snapshot (checksums, every
record decoded, the count), and whether the newest valid snapshot and the WAL together still
cover the whole history (no gap between the snapshot's LSN and the oldest retained entry).

Findings are graded: an *error* is something the node would refuse to start on, or data that
is lost; a *warning* is something recovery repairs or ignores by itself (a torn tail of the
newest segment, a leftover temporary file, a damaged snapshot with a valid older one). The
directory is healthy when there is no error.

Layout: ``<data-dir>/wal/`` holds segments, ``<data-dir>/snapshots/`` snapshots.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shardkv.node.storage.snapshots.snapshot import SnapshotCorrupt, list_snapshots, read_snapshot
from shardkv.node.wal.framing import DamageKind
from shardkv.node.wal.recovery import check_link
from shardkv.node.wal.segment import (
    TMP_SUFFIX,
    SegmentScan,
    WalCorruption,
    list_segment_files,
    read_segment_entries,
    scan_segment,
)

WAL_DIR = "wal"
SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    path: str
    offset: int | None
    message: str

    def render(self) -> str:
        where = self.path if self.offset is None else f"{self.path} @ offset {self.offset}"
        return f"{self.severity.upper()}: {where}: {self.message}"


@dataclass(frozen=True)
class SnapshotCheck:
    path: str
    lsn: int
    epoch: int
    count: int
    ok: bool


@dataclass
class VerifyReport:
    data_dir: str
    segments: int = 0
    entries: int = 0
    wal_bytes: int = 0
    first_lsn: int = 0  # oldest retained entry (0: none)
    last_lsn: int = 0  # the log's end (the next append is last_lsn + 1)
    last_epoch: int = 0
    snapshots: list[SnapshotCheck] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def error(self, path: Path | str, offset: int | None, message: str) -> None:
        self.problems.append(Problem("error", str(path), offset, message))

    def warn(self, path: Path | str, offset: int | None, message: str) -> None:
        self.problems.append(Problem("warning", str(path), offset, message))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out

    def render(self) -> str:
        lines = [
            f"data dir  {self.data_dir}",
            f"wal       {self.segments} segments, {self.entries} entries, {self.wal_bytes} bytes, "
            f"lsn {self.first_lsn}..{self.last_lsn}, epoch {self.last_epoch}",
        ]
        for snap in self.snapshots:
            state = "ok" if snap.ok else "DAMAGED"
            lines.append(
                f"snapshot  {Path(snap.path).name}: lsn {snap.lsn}, epoch {snap.epoch}, "
                f"{snap.count} records, {state}"
            )
        lines.extend(problem.render() for problem in self.problems)
        lines.append("healthy" if self.healthy else "NOT healthy")
        return "\n".join(lines)


def verify_data_dir(data_dir: Path, *, allow_torn_tail: bool = False) -> VerifyReport:
    """Check ``data_dir`` without modifying it. Blocking (reads every file).

    A damaged last record (whole, but its checksum fails) is an error unless
    ``allow_torn_tail``: recovery would drop it, and on a standalone node or after a ``w=one``
    write nobody else may hold it (a torn write and a bit flip in an acknowledged record look
    the same). A short last record or zeros (an interrupted write, never acknowledged) is
    only a warning."""
    data_dir = Path(data_dir)
    report = VerifyReport(str(data_dir))
    base = _verify_wal(data_dir / WAL_DIR, report, allow_torn_tail)
    newest_valid = _verify_snapshots(data_dir / SNAPSHOT_DIR, report)
    if base is not None and base > newest_valid:
        report.error(
            data_dir,
            None,
            f"history gap: the WAL starts after lsn {base} but the newest valid snapshot is at "
            f"lsn {newest_valid}; entries {newest_valid + 1}..{base} exist nowhere",
        )
    for snap in report.snapshots:
        if snap.ok and base is not None and snap.lsn > report.last_lsn:
            report.warn(
                snap.path,
                None,
                f"snapshot at lsn {snap.lsn} is ahead of the WAL's end ({report.last_lsn})",
            )
    return report


def _verify_wal(wal_dir: Path, report: VerifyReport, allow_torn_tail: bool = False
                ) -> int | None:
    """Check the segments; returns the LSN the log starts after (None without a log)."""
    if not wal_dir.is_dir():
        report.warn(wal_dir, None, "no WAL directory (a node that never started?)")
        return None
    for path in sorted(wal_dir.iterdir()):
        if path.name.endswith(TMP_SUFFIX):
            report.warn(path, None, "leftover temporary segment (removed at next start)")
        elif ".broken-" in path.name:
            report.warn(path, None, "copy of a segment taken before a torn-tail repair")
    files = list_segment_files(wal_dir)
    if not files:
        report.warn(wal_dir, None, "no segments")
        return None
    scans: list[SegmentScan] = []
    for index, (_, _, path) in enumerate(files):
        try:
            scans.append(scan_segment(path, newest=index == len(files) - 1))
        except WalCorruption as exc:
            report.error(path, exc.offset, exc.reason)
            scans = []
            break
    if not scans:
        return None
    restart = max((i for i, s in enumerate(scans) if s.header.restart), default=0)
    for scan in scans[:restart]:
        report.warn(scan.path, None, "obsolete: older than a restart (removed at next start)")
    scans = scans[restart:]
    for prev, scan in itertools.pairwise(scans):
        try:
            if prev.damage is None:
                check_link(prev, scan)
            elif scan.header.seq != prev.header.seq + 1:  # its end is unknown: only the numbering
                raise WalCorruption(scan.path, 0, f"segment {prev.header.seq + 1} is missing")
        except WalCorruption as exc:
            report.error(exc.path, exc.offset, exc.reason)
    for index, scan in enumerate(scans):
        report.segments += 1
        report.wal_bytes += scan.file_size
        report.entries += scan.entries
        damage = scan.damage
        if damage is None:
            _decode_entries(scan, report)
        elif index == len(scans) - 1 and damage.kind is DamageKind.TORN:
            message = (f"torn tail, {scan.file_size - damage.offset} bytes (truncated at next "
                       f"start): {damage.reason}")
            if allow_torn_tail or not _whole_record_damaged(damage.reason):
                report.warn(scan.path, damage.offset, message)
            else:
                report.error(scan.path, damage.offset, message + "; the last record would be "
                             "dropped (--allow-torn-tail accepts that)")
        else:
            report.error(scan.path, damage.offset, damage.reason)
    report.last_lsn = scans[-1].last_lsn
    report.last_epoch = scans[-1].last_epoch
    base = scans[0].first_lsn - 1
    report.first_lsn = base + 1 if report.last_lsn > base else 0
    return base


def _whole_record_damaged(reason: str) -> bool:
    """A last record of full length whose checksum fails (``segment.py`` reclassifies it as a
    torn tail): it may be a bit flip in an acknowledged write. A short record or zeros is an
    interrupted write, which was never acknowledged."""
    return reason.endswith("(nothing intact follows)")


def _decode_entries(scan: SegmentScan, report: VerifyReport) -> None:
    try:
        for _ in read_segment_entries(scan.path, scan.first_lsn, scan.first_lsn):
            pass
    except WalCorruption as exc:
        report.error(scan.path, exc.offset, exc.reason)


def _verify_snapshots(snapshot_dir: Path, report: VerifyReport) -> int:
    """Check every snapshot; returns the LSN of the newest valid one (0 if none)."""
    if not snapshot_dir.is_dir():
        return 0
    listed = {meta.path for meta in list_snapshots(snapshot_dir)}
    for path in sorted(snapshot_dir.iterdir()):
        if path.name.startswith("snapshot-") and path.suffix == ".snap" and path not in listed:
            report.warn(path, 0, "snapshot header unreadable (recovery skips it)")
        elif path.name.startswith("snapshot-") and path.name.endswith(".tmp"):
            report.warn(path, None, "leftover temporary snapshot (an interrupted write)")
    newest_valid = 0
    damaged: list[tuple[Path, str]] = []
    for meta in list_snapshots(snapshot_dir):
        ok = True
        try:
            for _ in read_snapshot(meta.path):
                pass
        except SnapshotCorrupt as exc:
            ok = False
            damaged.append((meta.path, exc.reason))
        report.snapshots.append(SnapshotCheck(str(meta.path), meta.lsn, meta.epoch, meta.count, ok))
        if ok:
            newest_valid = max(newest_valid, meta.lsn)
    for path, reason in damaged:
        # Recovery skips a damaged snapshot; it only matters if the history has a gap
        # because of it (checked by the caller), so on its own it is a warning.
        report.warn(path, None, f"damaged snapshot (recovery skips it): {reason}")
    return newest_valid

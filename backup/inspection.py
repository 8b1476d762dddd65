"""``shardkv backup list|verify|delete``: what a destination holds, whether all of it is
intact, and removing backups (by id, or by retention rule) with the WAL only they needed.

``verify`` reads every stored byte: each manifest's own checksum, each shard file's size and
SHA-256 (``--deep`` also decrypts and decodes every record, which needs the key), each
archived WAL chunk likewise, and the archive's continuity: from the oldest backup's LSN of
each shard to its newest archived entry, every LSN must be in some chunk. Every problem is
one line naming the file; the exit status is 1 if there is any.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shardkv.backup.pitr import fmt_time, shard_replay
from shardkv.backup.repository.catalog import backup_ids, delete_backup, load_manifest
from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.errors import BackupError
from shardkv.backup.repository.manifest import Manifest
from shardkv.backup.repository.record_stream import StoredFile, check_stored, read_records
from shardkv.backup.repository.retention import doomed_backups, prunable_chunks
from shardkv.backup.repository.wal_archive import (
    archived_shards,
    gaps,
    index_name,
    list_chunks,
)


@dataclass
class VerifyReport:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": self.files, "bytes": self.bytes,
                "problems": self.problems, "warnings": self.warnings}


def _check(dest: Destination, stored: StoredFile, report: VerifyReport, deep: bool,
           key: bytes | None) -> None:
    try:
        if deep:
            for _record in read_records(dest, stored, key):
                pass
        else:
            check_stored(dest, stored)
        report.files += 1
        report.bytes += stored.size
    except BackupError as exc:
        report.problems.append(str(exc))


def verify(dest: Destination, *, backup_id: str | None = None, deep: bool = False,
           key: bytes | None = None) -> VerifyReport:
    report = VerifyReport()
    complete, incomplete = backup_ids(dest)
    if backup_id is not None:
        complete = [backup_id]
    for bid in incomplete:
        if backup_id is None:
            report.warnings.append(f"backups/{bid}/ is an interrupted backup (no manifest); "
                                   "`shardkv backup delete --backup ID` removes it")
    oldest_lsn: dict[str, int] = {}
    for bid in complete:
        try:
            manifest = load_manifest(dest, bid)
        except BackupError as exc:
            report.problems.append(str(exc))
            continue
        for shard, base in sorted(manifest.shards.items()):
            _check(dest, base.file, report, deep, key)
            oldest_lsn[shard] = min(oldest_lsn.get(shard, base.lsn), base.lsn)
    if backup_id is None:
        for shard in archived_shards(dest):
            _verify_archive(dest, shard, oldest_lsn.get(shard), report, deep, key)
    if not complete and not archived_shards(dest):
        report.problems.append(f"no backup in {dest.url}")
    return report


def _verify_archive(dest: Destination, shard: str, from_lsn: int | None,
                    report: VerifyReport, deep: bool, key: bytes | None) -> None:
    try:
        chunks = list_chunks(dest, shard)
    except BackupError as exc:
        report.problems.append(str(exc))
        return
    for chunk in chunks:
        _check(dest, chunk.file, report, deep, key)
    if not chunks:
        return
    # From the oldest backup on, but not before the first chunk: archiving switched on after
    # a backup is not damage (that backup just has no point-in-time range).
    start = chunks[0].first_lsn - 1 if from_lsn is None else max(from_lsn,
                                                                 chunks[0].first_lsn - 1)
    for first, last in gaps(chunks, start):
        before = [c for c in chunks if c.last_lsn < first]
        after = [c for c in chunks if c.first_lsn > last]
        where = (f" between {index_name(shard, before[-1].first_lsn, before[-1].last_lsn)}"
                 if before else "") + (
            f" and {index_name(shard, after[0].first_lsn, after[0].last_lsn)}" if after else "")
        report.problems.append(f"archived WAL of shard {shard} misses LSNs {first}..{last}"
                               f"{where} (point-in-time restore cannot cross it)")


def describe(dest: Destination) -> dict[str, Any]:
    """Backups and the point-in-time window of each (what ``list`` prints)."""
    complete, incomplete = backup_ids(dest)
    backups = []
    for bid in complete:
        try:
            manifest = load_manifest(dest, bid)
        except BackupError as exc:
            backups.append({"id": bid, "error": str(exc)})
            continue
        entry = _summary(manifest)
        try:
            ends = [shard_replay(dest, manifest, s).window_end for s in manifest.shards]
            entry["restorable_until"] = min(ends) if ends else manifest.consistent_at
        except BackupError as exc:
            entry["restorable_until"] = None
            entry["archive_error"] = str(exc)
        backups.append(entry)
    return {"destination": dest.url, "backups": backups, "incomplete": incomplete}


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {"id": manifest.backup_id, "created_at": manifest.created_at,
            "consistent_at": manifest.consistent_at, "shards": len(manifest.shards),
            "keys": manifest.keys, "stored_bytes": manifest.stored_bytes,
            "raw_bytes": manifest.raw_bytes, "encrypted": manifest.key_id is not None,
            "map_version": manifest.map_version,
            "lsns": {s: b.lsn for s, b in sorted(manifest.shards.items())}}


def render(listing: dict[str, Any]) -> str:
    lines = [f"{'BACKUP':<26} {'CONSISTENT AT (UTC)':<25} {'SHARDS':>6} {'KEYS':>10} "
             f"{'STORED MB':>10} {'RATIO':>6} {'ENC':>4}  RESTORABLE UNTIL"]
    for b in listing["backups"]:
        if "error" in b:
            lines.append(f"{b['id']:<26} {b['error']}")
            continue
        ratio = b["raw_bytes"] / b["stored_bytes"] if b["stored_bytes"] else 0.0
        until = fmt_time(b["restorable_until"]) if b.get("restorable_until") else "?"
        lines.append(f"{b['id']:<26} {fmt_time(b['consistent_at']):<25} {b['shards']:>6} "
                     f"{b['keys']:>10} {b['stored_bytes'] / 1e6:>10.2f} {ratio:>6.2f} "
                     f"{'yes' if b['encrypted'] else 'no':>4}  {until}")
    for bid in listing["incomplete"]:
        lines.append(f"{bid:<26} (interrupted: no manifest)")
    return "\n".join(lines)


def delete(dest: Destination, *, backup_id: str | None, keep: int | None,
           keep_days: float | None, now: float | None = None) -> dict[str, Any]:
    """Delete one backup, or what the retention rules do not keep, then the archived WAL
    chunks no kept backup can use."""
    complete, _incomplete = backup_ids(dest)
    if backup_id is not None:
        doomed = [backup_id]
    else:
        created = []
        for bid in complete:
            try:
                created.append((bid, load_manifest(dest, bid).created_at))
            except BackupError:
                continue  # a damaged manifest is never deleted by a rule: a human looks first
        try:
            doomed = doomed_backups(created, keep=keep, keep_days=keep_days,
                                    now=time.time() if now is None else now)
        except ValueError as exc:
            raise BackupError(str(exc)) from None
    objects = sum(delete_backup(dest, bid) for bid in doomed)
    pruned = prune_archive(dest)
    return {"deleted": doomed, "objects": objects, "wal_chunks_pruned": pruned}


def prune_archive(dest: Destination) -> int:
    """Remove archived chunks older than every remaining backup of their shard."""
    complete, _ = backup_ids(dest)
    if not complete:
        return 0  # no backup: the archive is all there is; keep it
    oldest: dict[str, int] = {}
    for bid in complete:
        try:
            manifest = load_manifest(dest, bid)
        except BackupError:
            return 0  # unsure what a damaged manifest needed: prune nothing
        for shard, base in manifest.shards.items():
            oldest[shard] = min(oldest.get(shard, base.lsn), base.lsn)
    removed = 0
    for shard in archived_shards(dest):
        if shard not in oldest:
            continue
        for chunk in prunable_chunks(list_chunks(dest, shard), oldest[shard]):
            dest.delete(index_name(shard, chunk.first_lsn, chunk.last_lsn))
            dest.delete(chunk.file.name)
            removed += 1
    return removed

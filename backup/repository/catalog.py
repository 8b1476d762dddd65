"""The backups in a destination: listing, loading a manifest, deleting one.

A backup is complete when its manifest exists (it is written last); a prefix without one is
an interrupted backup, which ``list`` shows as such and ``delete`` can remove. Deleting
removes the manifest first, so a deletion cut short leaves an incomplete backup, never a
manifest that names missing files.
"""

from __future__ import annotations

from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.errors import BackupError, MissingFile
from shardkv.backup.repository.manifest import BACKUPS_PREFIX, MANIFEST, Manifest, manifest_name


def backup_ids(dest: Destination) -> tuple[list[str], list[str]]:
    """``(complete, incomplete)`` backup ids, oldest first."""
    complete, seen = set(), set()
    for info in dest.list(BACKUPS_PREFIX):
        parts = info.name.split("/")
        if len(parts) < 3:
            continue
        seen.add(parts[1])
        if len(parts) == 3 and parts[2] == MANIFEST:
            complete.add(parts[1])
    return sorted(complete), sorted(seen - complete)


def load_manifest(dest: Destination, backup_id: str) -> Manifest:
    name = manifest_name(backup_id)
    try:
        data = dest.read_bytes(name)
    except MissingFile:
        raise BackupError(f"no complete backup {backup_id!r} in {dest.url}") from None
    return Manifest.from_json(data, name)


def latest_manifest(dest: Destination) -> Manifest:
    complete, _ = backup_ids(dest)
    if not complete:
        raise BackupError(f"no backup in {dest.url}")
    return load_manifest(dest, complete[-1])


def delete_backup(dest: Destination, backup_id: str) -> int:
    """Remove every object of one backup; returns how many there were."""
    names = [info.name for info in dest.list(f"{BACKUPS_PREFIX}{backup_id}/")]
    if not names:
        raise BackupError(f"no backup {backup_id!r} in {dest.url}")
    manifest = manifest_name(backup_id)
    for name in sorted(names, key=lambda n: n != manifest):
        dest.delete(name)
    return len(names)

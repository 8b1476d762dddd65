"""The manifest: what one backup holds, written last (a backup without one is incomplete).

``backups/<id>/manifest.json`` records the format version, the cluster map at a recorded
version (ring included), and per shard: the LSN and epoch its rows are consistent at, the
member they were read from, when, how many keys, and the stored file (size, SHA-256). It
also records the encryption (algorithm and key id, never the key). The manifest carries its
own SHA-256 over its canonical JSON, so an edited manifest is caught like a damaged file.

Backup ids sort by time: ``20261206T170102Z-3fa9c1`` (UTC, then random).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from shardkv.backup.repository.errors import DamagedFile
from shardkv.backup.repository.record_stream import StoredFile

FORMAT_VERSION = 1
BACKUPS_PREFIX = "backups/"
MANIFEST = "manifest.json"


def new_backup_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def manifest_name(backup_id: str) -> str:
    return f"{BACKUPS_PREFIX}{backup_id}/{MANIFEST}"


def shard_file_name(backup_id: str, shard: str, encrypted: bool) -> str:
    return f"{BACKUPS_PREFIX}{backup_id}/shards/{shard}.kv.zst" + (".aes" if encrypted else "")


@dataclass(frozen=True, slots=True)
class ShardBackup:
    """One shard's rows: consistent at ``lsn`` (every write up to it, none after)."""

    shard: str
    lsn: int
    epoch: int
    node: str
    role: str
    taken_at: float  # the node's clock when it took the view at ``lsn``
    keys: int
    file: StoredFile

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "lsn": self.lsn, "epoch": self.epoch, "node": self.node,
                "role": self.role, "taken_at": self.taken_at, "keys": self.keys,
                "file": self.file.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ShardBackup:
        return cls(str(raw["shard"]), int(raw["lsn"]), int(raw["epoch"]), str(raw["node"]),
                   str(raw["role"]), float(raw["taken_at"]), int(raw["keys"]),
                   StoredFile.from_dict(raw["file"]))


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    created_at: float
    finished_at: float
    map_version: int
    ring: dict[str, Any]
    cluster_map: dict[str, Any]
    shards: dict[str, ShardBackup]
    key_id: str | None = None  # set when the files are encrypted
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> int:
        return sum(s.keys for s in self.shards.values())

    @property
    def stored_bytes(self) -> int:
        return sum(s.file.size for s in self.shards.values())

    @property
    def raw_bytes(self) -> int:
        return sum(s.file.raw_bytes for s in self.shards.values())

    @property
    def consistent_at(self) -> float:
        """The earliest moment the whole backup describes: after every shard's view."""
        return max((s.taken_at for s in self.shards.values()), default=self.created_at)

    @property
    def max_version(self) -> int:
        return max((s.lsn for s in self.shards.values()), default=0)

    def _body(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "backup_id": self.backup_id,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "map_version": self.map_version, "ring": self.ring,
            "cluster_map": self.cluster_map,
            "shards": {sid: s.to_dict() for sid, s in sorted(self.shards.items())},
            "encryption": None if self.key_id is None else {"algorithm": "AES-256-GCM",
                                                            "key_id": self.key_id},
            "compression": "zstd", **({"extra": self.extra} if self.extra else {}),
        }

    def to_json(self) -> bytes:
        body = self._body()
        body["manifest_sha256"] = _digest(body)
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, name: str) -> Manifest:
        try:
            body = json.loads(data)
            recorded = body.pop("manifest_sha256")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise DamagedFile(name, f"not a backup manifest: {exc}") from None
        if recorded != _digest(body):
            raise DamagedFile(name, "the manifest's own SHA-256 does not match (edited?)")
        version = body.get("format_version")
        if version != FORMAT_VERSION:
            raise DamagedFile(name, f"format version {version}; this shardkv reads "
                                    f"{FORMAT_VERSION}")
        try:
            encryption = body.get("encryption")
            return cls(
                backup_id=str(body["backup_id"]), created_at=float(body["created_at"]),
                finished_at=float(body["finished_at"]), map_version=int(body["map_version"]),
                ring=dict(body["ring"]), cluster_map=dict(body["cluster_map"]),
                shards={sid: ShardBackup.from_dict(s) for sid, s in body["shards"].items()},
                key_id=None if encryption is None else str(encryption["key_id"]),
                format_version=int(version), extra=dict(body.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedFile(name, f"incomplete manifest: {exc}") from None


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

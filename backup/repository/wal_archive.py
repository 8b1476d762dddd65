"""The WAL archive's layout: per shard, chunks of committed log entries and their index.

Under ``wal/<shard>/`` a node with ``--archive-to`` writes (``node/backup/wal_archiver.py``):

- ``<first lsn 16>-<last lsn 16>.wal.zst[.aes]``: the entries ``first..last`` of the shard's
  log, as records ``[lsn, epoch, ts, [[kind, key, value, expires_at], ...]]`` (kind 1 put,
  2 delete; values as the client wrote them; ``ts`` the primary's clock at the write);
- ``<same stem>.json``, written after the chunk: its ``StoredFile`` plus the LSN and time
  range. A chunk without its index file is an interrupted upload and is ignored;
- ``progress.json``: ``{"lsn", "at"}``: at time ``at`` every entry up to ``lsn`` was
  archived and was the primary's last applied one. It extends the restorable window of an
  idle shard (no new chunk, yet its state at ``at`` is known).

Only entries a majority holds (the primary's applied LSN) are archived, so a chunk can never
hold a write a failover rolls back; two archivers (an old and a new primary) may write
overlapping ranges, which readers merge by LSN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shardkv.backup.repository.destination import Destination
from shardkv.backup.repository.errors import BackupError, DamagedFile
from shardkv.backup.repository.record_stream import StoredFile

WAL_PREFIX = "wal/"
PROGRESS = "progress.json"
PUT = 1
DELETE = 2


def chunk_name(shard: str, first: int, last: int, encrypted: bool) -> str:
    return f"{WAL_PREFIX}{shard}/{first:016d}-{last:016d}.wal.zst" + (".aes" if encrypted else "")


def index_name(shard: str, first: int, last: int) -> str:
    return f"{WAL_PREFIX}{shard}/{first:016d}-{last:016d}.json"


def progress_name(shard: str) -> str:
    return f"{WAL_PREFIX}{shard}/{PROGRESS}"


@dataclass(frozen=True, slots=True)
class ArchivedChunk:
    shard: str
    first_lsn: int
    last_lsn: int
    first_ts: float
    last_ts: float
    key_id: str | None
    file: StoredFile
    node: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "first_lsn": self.first_lsn, "last_lsn": self.last_lsn,
                "first_ts": self.first_ts, "last_ts": self.last_ts, "key_id": self.key_id,
                "file": self.file.to_dict(), "node": self.node}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ArchivedChunk:
        return cls(str(raw["shard"]), int(raw["first_lsn"]), int(raw["last_lsn"]),
                   float(raw["first_ts"]), float(raw["last_ts"]), raw.get("key_id"),
                   StoredFile.from_dict(raw["file"]), str(raw.get("node", "")))


@dataclass(frozen=True, slots=True)
class Progress:
    lsn: int
    at: float


def archived_shards(dest: Destination) -> list[str]:
    return sorted({info.name.split("/")[1] for info in dest.list(WAL_PREFIX)
                   if info.name.count("/") == 2})


def list_chunks(dest: Destination, shard: str) -> list[ArchivedChunk]:
    """The shard's complete chunks (those with an index), by first LSN. An unreadable index
    raises ``DamagedFile`` naming it."""
    chunks = []
    for info in dest.list(f"{WAL_PREFIX}{shard}/"):
        if not info.name.endswith(".json") or info.name.endswith(PROGRESS):
            continue
        try:
            chunks.append(ArchivedChunk.from_dict(json.loads(dest.read_bytes(info.name))))
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedFile(info.name, f"unreadable archive index: {exc}") from None
    return sorted(chunks, key=lambda c: (c.first_lsn, c.last_lsn))


def last_archived_lsn(dest: Destination, shard: str) -> int:
    """The highest LSN in the shard's archive (0 when there is none), from names alone."""
    best = 0
    for info in dest.list(f"{WAL_PREFIX}{shard}/"):
        stem = info.name.rsplit("/", 1)[-1].split(".", 1)[0]
        first, sep, last = stem.partition("-")
        if sep and info.name.endswith(".json") and first.isdigit() and last.isdigit():
            best = max(best, int(last))
    return best


def read_progress(dest: Destination, shard: str) -> Progress | None:
    try:
        raw = json.loads(dest.read_bytes(progress_name(shard)))
        return Progress(int(raw["lsn"]), float(raw["at"]))
    except BackupError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # a torn progress marker only shortens the window


def write_progress(dest: Destination, shard: str, progress: Progress) -> None:
    dest.put_bytes(progress_name(shard), json.dumps({"lsn": progress.lsn,
                                                     "at": progress.at}).encode())


def gaps(chunks: list[ArchivedChunk], from_lsn: int) -> list[tuple[int, int]]:
    """Missing LSN ranges ``(first, last)`` after ``from_lsn`` up to the newest chunk."""
    missing = []
    covered = from_lsn
    for chunk in chunks:
        if chunk.last_lsn <= covered:
            continue
        if chunk.first_lsn > covered + 1:
            missing.append((covered + 1, chunk.first_lsn - 1))
        covered = chunk.last_lsn
    return missing


def covering(chunks: list[ArchivedChunk], from_lsn: int) -> list[ArchivedChunk]:
    """The chunks needed to replay from ``from_lsn + 1`` on, in order (overlaps dropped)."""
    needed = []
    covered = from_lsn
    for chunk in chunks:
        if chunk.last_lsn <= covered or chunk.first_lsn > covered + 1:
            continue
        needed.append(chunk)
        covered = chunk.last_lsn
    return needed

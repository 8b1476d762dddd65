"""Give an SQLite engine file's free pages back to the file system (``shardkv node compact``).

An overwrite or a delete leaves free pages inside ``engine.db`` that SQLite reuses but never
returns, and the database's own ``-wal`` file grows to the largest burst between
checkpoints. Compaction checkpoints that file to nothing, rebuilds the database with
``VACUUM`` (only live rows are copied), and checkpoints again. While it runs the engine's
flush lock is held, so applied writes stay buffered in memory (reads see them) and are
committed right after; the rebuild needs free space of about the database's size.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiosqlite


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """Before and after, in bytes (the database plus its ``-wal`` file) and free pages."""

    bytes_before: int
    bytes_after: int
    free_pages_before: int
    free_pages_after: int
    page_size: int
    seconds: float

    @property
    def reclaimed_bytes(self) -> int:
        return max(0, self.bytes_before - self.bytes_after)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reclaimed_bytes": self.reclaimed_bytes}


def database_bytes(path: Path) -> int:
    """``engine.db`` plus its ``-wal`` and ``-shm`` files, as they are now."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            continue
    return total


async def _pragma(conn: aiosqlite.Connection, statement: str) -> int:
    """Run one statement to completion (VACUUM refuses to run while one is unfinished) and
    return the first column of its first row."""
    async with conn.execute(statement) as cursor:
        rows = list(await cursor.fetchall())
    return int(rows[0][0]) if rows else 0


async def vacuum(conn: aiosqlite.Connection, path: Path) -> CompactionReport:
    """Checkpoint, VACUUM, checkpoint; the caller holds the engine's flush lock and has
    flushed, so no transaction is open on ``conn``."""
    started = time.perf_counter()
    page_size = await _pragma(conn, "PRAGMA page_size")
    free_before = await _pragma(conn, "PRAGMA freelist_count")
    bytes_before = database_bytes(path)
    await _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
    await _pragma(conn, "VACUUM")
    await _pragma(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
    return CompactionReport(
        bytes_before=bytes_before,
        bytes_after=database_bytes(path),
        free_pages_before=free_before,
        free_pages_after=await _pragma(conn, "PRAGMA freelist_count"),
        page_size=page_size,
        seconds=round(time.perf_counter() - started, 4),
    )

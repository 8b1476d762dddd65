"""The SQLite engine's checkpoint, as far as it can be tested honestly from Python.

SQLite syncs (or, here, does not) in C, out of the simulated disk's sight, so these tests check
the two things the engine's crash story rests on (``node/storage/engines/sqlite.py``):

- the settings: WAL journal mode with ``synchronous=NORMAL`` (the node's own WAL is the durable
  record; SQLite's files may lose recent commits, but not their consistency, after a power
  loss, or come back empty:
  ``test_powerloss_snapshots`` runs a whole Store through that case);
- the applied LSN is written in the same transaction as the rows: a transaction that fails
  between the rows and the LSN leaves neither.

Not covered: SQLite's own files after a real power loss (its syncs happen in C). With
``synchronous=NORMAL`` in WAL mode SQLite documents the database as consistent, possibly old;
``OFF``, which the engine used before, allowed a corrupt file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from shardkv.node.storage.engines import sqlite as sqlite_engine
from shardkv.node.storage.engines.sqlite import DB_FILE, SqliteEngine
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry


def put(lsn: int) -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"k%d" % lsn, b"v%d" % lsn),), ts=0.0)


def on_disk(directory: Path) -> tuple[int | None, list[bytes]]:
    """(applied_lsn, keys) as a separate connection sees the committed database."""
    conn = sqlite3.connect(directory / DB_FILE)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'applied_lsn'").fetchone()
        keys = [bytes(k) for (k,) in conn.execute("SELECT key FROM kv ORDER BY key")]
        return (row[0] if row else None), keys
    finally:
        conn.close()


async def test_the_engine_runs_in_wal_mode_without_syncs(tmp_path: Path) -> None:
    engine = await SqliteEngine.open(tmp_path, flush_interval_s=3600)
    try:
        async with engine._conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone())[0] == "wal"
        async with engine._conn.execute("PRAGMA synchronous") as cursor:
            assert (await cursor.fetchone())[0] == 1  # NORMAL: consistent, maybe old
    finally:
        await engine.close()


async def test_rows_and_applied_lsn_commit_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await SqliteEngine.open(tmp_path, flush_interval_s=3600)
    try:
        for lsn in (1, 2):
            await engine.apply(put(lsn))
        await engine.flush()
        assert on_disk(tmp_path) == (2, [b"k1", b"k2"])

        async def fail_after_rows(conn: object, lsn: int) -> None:
            raise sqlite3.OperationalError("disk I/O error (injected after the rows)")

        monkeypatch.setattr(sqlite_engine, "_write_meta", fail_after_rows)
        for lsn in (3, 4):
            await engine.apply(put(lsn))
        with pytest.raises(sqlite3.OperationalError):
            await engine.flush()
        assert on_disk(tmp_path) == (2, [b"k1", b"k2"])  # neither the rows nor the LSN
    finally:
        monkeypatch.undo()
        await engine.close()

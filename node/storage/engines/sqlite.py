"""The SQLite engine: state larger than memory, in one table, applied in batched transactions.

Durability comes from the node's own WAL, so SQLite runs in WAL journal mode with
``synchronous=NORMAL``: commits are not fsynced (the node's WAL already holds them), but SQLite
syncs its log before every checkpoint into the database file, which is what keeps the file
*consistent* after a power loss. ``synchronous=OFF`` would save those few syncs and, as SQLite
documents, may leave a corrupt database after a power loss, not just an old one. The ``meta``
table holds the LSN of the last applied entry, written in the same transaction as the data it
describes, so after any crash the database is exactly the state at its recorded
``applied_lsn``, and the Store replays the WAL from there. A power loss can roll the database
back to an older LSN; the WAL still holds everything after it, because WAL segments are only
removed behind a synced snapshot.

Applying one transaction per entry would cost a commit per write, so applied entries are
buffered in memory (``_pending``: key -> newest item, or None for a delete) and flushed in one
transaction every ``flush_entries`` entries or ``flush_interval_s``. Reads look at the buffer
(and at the buffer being flushed) before the table, so a read never goes back in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import aiosqlite
from shardkv.cluster.durable_file import ensure_dir
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.engines.engine import (
    Engine,
    KeySelect,
    SnapshotRow,
    SnapshotView,
    StoredItem,
    check_apply_order,
    select_rows,
)
from shardkv.node.storage.engines.sqlite_compaction import CompactionReport, vacuum
from shardkv.node.wal.record import MutationKind, WalEntry

logger = logging.getLogger(__name__)

DB_FILE = "engine.db"
_IN_CHUNK = 500  # keys per "IN (...)" query: well under SQLite's variable limit
_FETCH_ROWS = 5000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        compressed INTEGER NOT NULL,
        version INTEGER NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS kv_expiry ON kv(expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
_UPSERT = (
    "INSERT OR REPLACE INTO kv(key, value, compressed, version, expires_at) VALUES (?,?,?,?,?)"
)
_SELECT_ITEM = "SELECT key, value, compressed, version, expires_at FROM kv"

Overlay = dict[bytes, StoredItem | None]


def _row_item(row: Sequence) -> StoredItem:
    return StoredItem(bytes(row[0]), bool(row[1]), int(row[2]), row[3])


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(
        self, conn: aiosqlite.Connection, path: Path, flush_entries: int, flush_interval_s: float
    ) -> None:
        self._conn = conn
        self._path = path
        self._flush_entries = flush_entries
        self._flush_interval_s = flush_interval_s
        self._pending: Overlay = {}
        self._flushing: Overlay = {}
        self._pending_entries = 0
        self._applied_lsn = 0
        self._committed_lsn = 0
        self._committed_count = 0
        self._flush_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls, directory: Path, *, flush_entries: int = 1000, flush_interval_s: float = 0.05
    ) -> SqliteEngine:
        await asyncio.to_thread(ensure_dir, directory)  # its entry durable in the parent
        path = directory / DB_FILE
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA temp_store=MEMORY")
            for statement in _SCHEMA:
                await conn.execute(statement)
            engine = cls(conn, path, flush_entries, flush_interval_s)
            engine._applied_lsn = engine._committed_lsn = await _read_meta(conn)
            async with conn.execute("SELECT COUNT(*) FROM kv") as cursor:
                engine._committed_count = _count_of(await cursor.fetchone())
        except BaseException:
            await conn.close()
            raise
        engine._timer = asyncio.create_task(engine._flush_periodically(), name="sqlite-flush")
        return engine

    @property
    def applied_lsn(self) -> int:
        return self._applied_lsn

    @property
    def committed_lsn(self) -> int:
        """The LSN the database file holds (what a restart would resume from)."""
        return self._committed_lsn

    @property
    def key_count(self) -> int:
        """Exact as of the last flush: it lags the applied state by at most one flush
        interval (counting a buffered put would need a lookup per write)."""
        return self._committed_count

    def _buffered(self, key: bytes) -> tuple[bool, StoredItem | None]:
        if key in self._pending:
            return True, self._pending[key]
        if key in self._flushing:
            return True, self._flushing[key]
        return False, None

    async def get(self, key: bytes) -> StoredItem | None:
        hit, item = self._buffered(key)
        if hit:
            return item
        async with self._conn.execute(
            "SELECT value, compressed, version, expires_at FROM kv WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _row_item(row)

    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        found: dict[bytes, StoredItem | None] = {}
        misses: list[bytes] = []
        for key in keys:
            hit, item = self._buffered(key)
            if hit:
                found[key] = item
            else:
                misses.append(key)
        for chunk in _chunks(list(dict.fromkeys(misses)), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            async with self._conn.execute(
                f"{_SELECT_ITEM} WHERE key IN ({marks})",
                chunk,
            ) as cursor:
                async for row in cursor:
                    found[bytes(row[0])] = _row_item(row[1:])
        # A buffered state taken before an await is still the newest (only apply changes the
        # buffer, and the table only ever catches up with it), so the answers are consistent.
        return [found.get(key) for key in keys]

    async def apply(self, entry: WalEntry) -> None:
        check_apply_order(self.name, self._applied_lsn, entry)
        pending, lsn, put, item = self._pending, entry.lsn, MutationKind.PUT, tuple.__new__
        for mutation in entry.mutations:  # an import or an mput: a thousand per entry
            # tuple.__new__: a StoredItem without its Python-level __new__ (same tuple).
            pending[mutation.key] = item(StoredItem, (
                mutation.value, mutation.compressed, lsn, mutation.expires_at,
            )) if mutation.kind is put else None
        self._applied_lsn = lsn
        self._pending_entries += 1
        if self._pending_entries >= self._flush_entries:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffer to the table in one transaction, with the applied LSN."""
        async with self._flush_lock:
            await self._flush_locked()

    async def _write_batch(self, batch: Overlay, lsn: int) -> int:
        conn = self._conn
        try:
            # BEGIN inside the try: a cancellation while it is queued must still roll back,
            # or the connection is left inside a transaction and every later flush fails.
            await conn.execute("BEGIN IMMEDIATE")
            existing: set[bytes] = set()
            for chunk in _chunks(list(batch), _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                async with conn.execute(
                    f"SELECT key FROM kv WHERE key IN ({marks})", chunk
                ) as cursor:
                    existing.update(bytes(row[0]) for row in await cursor.fetchall())
            puts = [(k, *item) for k, item in batch.items() if item is not None]
            deletes = [(k,) for k, item in batch.items() if item is None and k in existing]
            if puts:
                await conn.executemany(_UPSERT, puts)
            if deletes:
                await conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
            await _write_meta(conn, lsn)
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        added = sum(1 for k, item in batch.items() if item is not None and k not in existing)
        return added - len(deletes)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self.flush()
            except Exception:
                logger.exception("sqlite flush failed", extra=log_fields(path=str(self._path)))

    def _overlay_in_range(self, start: bytes | None, end: bytes | None) -> Overlay:
        merged = {**self._flushing, **self._pending}
        return {
            k: v
            for k, v in merged.items()
            if (start is None or k >= start) and (end is None or k < end)
        }

    async def scan(
        self, start: bytes | None, end: bytes | None, limit: int
    ) -> list[tuple[bytes, StoredItem]]:
        overlay = self._overlay_in_range(start, end)
        # Every overlay key can hide at most one table row, so reading limit + len(overlay)
        # rows guarantees the first `limit` rows of the merged view are among them.
        clauses: list[str] = []
        params: list[bytes | int] = []
        if start is not None:
            clauses.append("key >= ?")
            params.append(start)
        if end is not None:
            clauses.append("key < ?")
            params.append(end)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit + len(overlay))
        async with self._conn.execute(
            f"SELECT key, value, compressed, version, expires_at FROM kv {where} "
            "ORDER BY key LIMIT ?",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        merged: dict[bytes, StoredItem | None] = {bytes(row[0]): _row_item(row[1:])
                                                  for row in rows}
        merged.update(overlay)
        live = sorted((k, v) for k, v in merged.items() if v is not None)
        return live[:limit]

    async def expired(self, now: float, limit: int) -> list[tuple[bytes, int]]:
        await self.flush()  # the sweeper is background work: a flush first keeps this simple
        async with self._conn.execute(
            "SELECT key, version FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "ORDER BY expires_at LIMIT ?",
            (now, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        result = []
        for raw_key, version in rows:
            key = bytes(raw_key)
            hit, item = self._buffered(key)
            if hit and (item is None or item.expires_at is None or item.expires_at > now):
                continue  # rewritten after the flush above
            result.append((key, item.version if hit and item is not None else int(version)))
        return result

    async def snapshot_view(self, select: KeySelect | None = None) -> SnapshotView:
        reader = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            async with self._flush_lock:
                # Flush and open the read transaction under one lock, so no later flush can
                # commit in between: the reader's snapshot is exactly the committed LSN.
                await self._flush_locked()
                await reader.execute("BEGIN")
                lsn = await _read_meta(reader)
                async with reader.execute("SELECT COUNT(*) FROM kv") as cursor:
                    count = _count_of(await cursor.fetchone())
        except BaseException:
            await reader.close()
            raise
        rows = _stream_table(reader)
        return SnapshotView(lsn, count, rows if select is None else select_rows(rows, select))

    async def _flush_locked(self) -> None:
        """Swap the buffer out (it stays readable as ``_flushing``) and commit it."""
        if self._applied_lsn == self._committed_lsn:
            return
        self._flushing, self._pending = self._pending, {}
        self._pending_entries = 0
        lsn = self._applied_lsn
        try:
            delta = await self._write_batch(self._flushing, lsn)
        except BaseException:
            self._pending = {**self._flushing, **self._pending}
            self._flushing = {}
            raise
        self._committed_lsn = lsn
        self._committed_count += delta
        self._flushing = {}

    async def compact(self) -> CompactionReport:
        """Return free pages to the file system (``sqlite_compaction.py``)."""
        async with self._flush_lock:
            await self._flush_locked()
            report = await vacuum(self._conn, self._path)
        logger.info("sqlite engine compacted", extra=log_fields(**report.to_dict()))
        return report

    async def load(self, rows: Iterable[SnapshotRow], lsn: int) -> None:
        async with self._flush_lock:
            self._pending, self._flushing, self._pending_entries = {}, {}, 0
            conn = self._conn
            count = 0
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute("DELETE FROM kv")
                iterator = iter(rows)
                # Pull rows in a thread: producing them (decompressing a snapshot) is CPU work.
                while chunk := await asyncio.to_thread(_take, iterator, 10_000):
                    await conn.executemany(_UPSERT, chunk)
                    count += len(chunk)
                await _write_meta(conn, lsn)
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
            self._applied_lsn = self._committed_lsn = lsn
            self._committed_count = count

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            # Under the flush lock the timer is asleep or waiting, never inside a transaction.
            async with self._flush_lock:
                self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        try:
            await self.flush()
        finally:
            await self._conn.close()


async def _read_meta(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT value FROM meta WHERE name = 'applied_lsn'") as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def _write_meta(conn: aiosqlite.Connection, lsn: int) -> None:
    await conn.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('applied_lsn', ?)", (lsn,))


async def _stream_table(reader: aiosqlite.Connection) -> AsyncIterator[SnapshotRow]:
    try:
        async with reader.execute(
            "SELECT key, value, compressed, version, expires_at FROM kv ORDER BY key"
        ) as cursor:
            while rows := await cursor.fetchmany(_FETCH_ROWS):
                for key, value, compressed, version, expires_at in rows:
                    yield (bytes(key), bytes(value), bool(compressed), int(version), expires_at)
        await reader.execute("COMMIT")
    finally:
        await reader.close()


def _chunks(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _take(iterator: Iterator[SnapshotRow], count: int) -> list[SnapshotRow]:
    return list(islice(iterator, count))


def _count_of(row: Sequence[object] | None) -> int:
    """The value of a ``SELECT COUNT(*)`` row (which SQLite always returns)."""
    if row is None:
        raise RuntimeError("SELECT COUNT(*) returned no row")
    count = row[0]
    assert isinstance(count, int)
    return count

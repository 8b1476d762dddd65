"""Continuous WAL archiving (``--archive-to DEST``): the shard's committed log, copied out.

Every ``archive_interval_s`` the node that is its shard's primary copies the entries it has
applied since the last archived LSN (entries a majority holds: nothing a failover could roll
back) to ``DEST/wal/<shard>/`` as one compressed (and, with ``SHARDKV_BACKUP_KEY``, encrypted)
chunk plus its index, then writes the shard's progress marker (layout:
``backup/repository/wal_archive.py``). Chunks are cut by time as well as by size, rather
than copying 64 MiB segment files as they seal, so the newest archived write is at most one
interval old however slowly the shard is written: that is the point-in-time recovery's
recovery point.

Every member with ``--archive-to`` runs this; only the primary writes. The others keep
reading the archive's end, so that after a failover the new primary continues where the old
one stopped. Every member also holds back the log trimming behind snapshots at the archived
LSN, so nothing is removed before it is archived, unless the disk runs low (the low-disk
guard's hard trim wins, and the gap is logged and shown by ``shardkv backup verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from shardkv.backup.repository.destination import Destination, open_destination
from shardkv.backup.repository.encryption import key_id, load_key
from shardkv.backup.repository.record_stream import RecordWriter
from shardkv.backup.repository.wal_archive import (
    ArchivedChunk,
    Progress,
    chunk_name,
    index_name,
    last_archived_lsn,
    write_progress,
)
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.compression import decode_value
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.wal.model import LsnCompacted
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog

if TYPE_CHECKING:
    from shardkv.node.server import NodeServer

logger = logging.getLogger(__name__)

MAX_CHUNK_ENTRIES = 50_000
MAX_CHUNK_BYTES = 64 << 20
REFRESH_S = 15.0  # how often a non-primary re-reads the archive's end


def _entry_record(entry: WalEntry) -> tuple[list[Any], int]:
    mutations = []
    size = 0
    for m in entry.mutations:
        if is_reserved(m.key):
            continue
        value = decode_value(m.value, m.compressed) if m.value else b""
        mutations.append([int(m.kind), m.key, value, m.expires_at])
        size += len(m.key) + len(value)
    return [entry.lsn, entry.epoch, entry.ts, mutations], size


class WalArchiver:
    def __init__(self, server: NodeServer, destination: str, interval_s: float) -> None:
        self.server = server
        self.destination = destination
        self.interval_s = interval_s
        self.key = load_key()
        self.archived_lsn: int | None = None  # None: not read from the archive yet
        self.chunks = 0
        self.gaps = 0
        self.last_error: str | None = None
        self._dest: Destination | None = None
        self._shard: str | None = None
        self._refreshed = 0.0
        self._was_primary = False
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        registry = self.server.metrics.registry
        Gauge("shardkv_wal_archived_lsn", "The newest LSN of this shard in the WAL archive, "
              "as this node knows it.", registry=registry).set_function(
            lambda: self.archived_lsn or 0)
        Gauge("shardkv_wal_archive_lag_entries", "Applied entries not archived yet (on the "
              "primary; 0 elsewhere).", registry=registry).set_function(self._lag)
        self._chunks = Counter("shardkv_wal_archive_chunks", "Archive chunks this node wrote.",
                               registry=registry)
        self._failures = Counter("shardkv_wal_archive_failures", "Archive rounds that failed "
                                 "(destination unreachable, full, ...).", registry=registry)
        self._gaps = Counter("shardkv_wal_archive_gaps", "Ranges trimmed from the log before "
                             "they were archived.", registry=registry)
        self.server.on_ready.append(self._start)
        self.server.on_stop.append(self._stop)

    async def _start(self, server: NodeServer) -> None:
        store = server.store
        assert store is not None
        store.snapshotter.hold_before = self.hold_before
        self._task = asyncio.create_task(self._run(), name="wal-archiver")
        logger.info("archiving the WAL", extra=log_fields(destination=self.destination,
                                                          interval_s=self.interval_s,
                                                          encrypted=self.key is not None))

    async def _stop(self, server: NodeServer) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # One last round as primary: what was applied before the stop is archived now.
        with contextlib.suppress(Exception):
            await self.step()

    def _lag(self) -> float:
        store = self.server.store
        if store is None or self.archived_lsn is None or self.server.ctx.role != "primary":
            return 0.0
        return float(max(0, store.applied_lsn - self.archived_lsn))

    def hold_before(self) -> int:
        """Log entries from this LSN on stay until archived (1: hold all, not known yet)."""
        return 1 if self.archived_lsn is None else self.archived_lsn + 1

    def status(self) -> dict[str, Any]:
        return {"destination": self.destination, "archived_lsn": self.archived_lsn,
                "chunks": self.chunks, "gaps": self.gaps, "last_error": self.last_error}

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
                self.last_error = None
            except Exception as exc:
                self._failures.inc()
                if self.last_error != str(exc):
                    logger.warning("WAL archiving failed; retrying", extra=log_fields(
                        destination=self.destination, error=str(exc)))
                self.last_error = str(exc)
            await asyncio.sleep(self.interval_s)

    async def step(self) -> None:
        """One round: learn where the archive ends, and as primary, extend it."""
        server = self.server
        store = server.store
        membership = server.membership
        shard = membership.shard if membership is not None else (server.config.shard or
                                                                   "default")
        if store is None or shard is None:
            return
        if self._dest is None:
            self._dest = await asyncio.to_thread(open_destination, self.destination,
                                                 create=True)
        primary = server.ctx.role == "primary"
        stale = time.monotonic() - self._refreshed > REFRESH_S
        promoted = primary and not self._was_primary
        self._was_primary = primary
        if (shard != self._shard or self.archived_lsn is None or promoted
                or (not primary and stale)):
            # A new primary continues from the archive's end as the old one left it.
            self.archived_lsn = await asyncio.to_thread(last_archived_lsn, self._dest, shard)
            self._shard, self._refreshed = shard, time.monotonic()
        if not primary:
            return
        at = time.time()
        applied = store.applied_lsn
        start = self.archived_lsn + 1
        while start <= applied:
            try:
                entries = await asyncio.to_thread(_read, store.wal, start, applied)
            except LsnCompacted:
                first = store.wal.first_lsn
                if self.archived_lsn:
                    self.gaps += 1
                    self._gaps.inc()
                    logger.error("WAL archive gap: entries were trimmed before they were "
                                 "archived", extra=log_fields(shard=shard, missing_from=start,
                                                              missing_to=first - 1))
                start = max(first, start + 1)
                continue
            if not entries:
                break
            chunk = await asyncio.to_thread(self._write_chunk, shard, entries)
            self.archived_lsn = chunk.last_lsn
            self.chunks += 1
            self._chunks.inc()
            start = chunk.last_lsn + 1
        if self.archived_lsn >= applied and self._lease_held():
            # "Nothing was written up to `at`" is only for a primary sure to be one: a deposed
            # primary that has not noticed yet would stretch the window past the new one's
            # writes.
            await asyncio.to_thread(write_progress, self._dest, shard,
                                    Progress(self.archived_lsn, at))

    def _lease_held(self) -> bool:
        if self.server.config.standalone:
            return True  # a one-node shard: nobody can depose it
        replication = getattr(self.server, "replication", None)
        lease = getattr(replication, "lease", None)
        return True if lease is None else bool(lease.valid)

    def _write_chunk(self, shard: str, entries: list[WalEntry]) -> ArchivedChunk:
        assert self._dest is not None
        first, last = entries[0].lsn, entries[-1].lsn
        encrypted = self.key is not None
        writer = RecordWriter(self._dest, chunk_name(shard, first, last, encrypted), self.key)
        try:
            for entry in entries:
                writer.write(_entry_record(entry)[0])
        except BaseException:
            writer.abort()
            raise
        stored = writer.close()
        node = self.server.ctx.node_id or self.server.config.node_id or ""
        chunk = ArchivedChunk(shard, first, last, entries[0].ts, entries[-1].ts,
                              None if self.key is None else key_id(self.key), stored, node)
        self._dest.put_bytes(index_name(shard, first, last),
                             json.dumps(chunk.to_dict(), sort_keys=True).encode())
        return chunk


def _read(wal: WriteAheadLog, start: int, end: int) -> list[WalEntry]:
    """Entries ``start..end``, at most a chunk's worth (blocking: run in a thread)."""
    entries: list[WalEntry] = []
    size = 0
    for entry in wal.read_from(start):
        if entry.lsn > end:
            break
        entries.append(entry)
        size += sum(len(m.key) + len(m.value) for m in entry.mutations) + 32
        if len(entries) >= MAX_CHUNK_ENTRIES or size >= MAX_CHUNK_BYTES:
            break
    return entries

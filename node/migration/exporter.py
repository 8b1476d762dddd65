"""The source primary's side of a migration: stream the moving arcs to the target primary.

Two phases, as a range snapshot plus log in a learner-based design (docs/resharding.md):

1. the rows of a consistent engine view at LSN ``L0`` (writes go on meanwhile), filtered to
   the moving arcs, in bounded batches;
2. the WAL from ``L0 + 1``, only up to the applied LSN (entries a majority holds: a failover
   can never roll back what was exported), filtered the same way, until stopped.

``ship_until(lsn)`` waits until everything up to ``lsn`` has been acknowledged by the target
(the fence uses it for the final catch-up). Batches go to ``POST /internal/migration/import``
with the cluster credential, msgpack-encoded; a batch is at most ``BATCH_KEYS`` records or
``BATCH_BYTES`` bytes, so memory stays bounded whatever the size of the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from typing import Any

import aiohttp
from shardkv.cluster import wire
from shardkv.cluster.cluster_token import auth_headers
from shardkv.cluster.errors import ShardKVError, Unavailable, error_from_dict
from shardkv.cluster.structured_log import log_fields
from shardkv.node.migration.arcs import MovingArcs
from shardkv.node.storage.sessions import SESSION_PREFIX, is_reserved
from shardkv.node.storage.store import Store
from shardkv.node.wal.record import MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog

logger = logging.getLogger(__name__)

BATCH_KEYS = int(os.environ.get("SHARDKV_MIGRATION_BATCH_KEYS") or 1000)
BATCH_BYTES = 1 << 20
# A pause after each batch of the bulk copy: a throttle for a loaded cluster (the foreground
# load keeps its share), and what lets a test land a fault in the middle of a copy.
BATCH_PAUSE_S = float(os.environ.get("SHARDKV_MIGRATION_BATCH_PAUSE_S") or 0.0)
TAIL_READ_ENTRIES = 2000
TAIL_IDLE_S = 0.02
REQUEST_TIMEOUT_S = 30.0

Record = list[Any]


def _read_tail(wal: WriteAheadLog, start: int, end: int) -> list[WalEntry]:
    """Entries ``start..end`` (at most TAIL_READ_ENTRIES), read in a worker thread."""
    entries = wal.read_from(start)
    return list(itertools.islice(itertools.takewhile(lambda e: e.lsn <= end, entries),
                                 TAIL_READ_ENTRIES))


class ArcExport:
    """One export attempt of one migration from this (source) node to one target primary."""

    def __init__(self, store: Store, migration_id: str, attempt: str, arcs: MovingArcs,
                 target_url: str) -> None:
        self.store = store
        self.migration_id = migration_id
        self.attempt = attempt
        self.arcs = arcs
        self.target_url = target_url.rstrip("/")
        self.phase = "starting"
        self.view_lsn: int | None = None
        self.shipped_lsn = 0
        self.keys_sent = 0
        self.bytes_sent = 0
        self.snapshot_keys = 0
        self.error: str | None = None
        self.started = time.monotonic()
        self._shipped = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"export-{self.migration_id}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def status(self) -> dict[str, Any]:
        store = self.store
        return {
            "migration": self.migration_id, "attempt": self.attempt,
            "source": self.arcs.source, "target": self.arcs.target,
            "target_url": self.target_url, "phase": self.phase, "error": self.error,
            "view_lsn": self.view_lsn, "shipped_lsn": self.shipped_lsn,
            "applied_lsn": store.applied_lsn, "epoch": store.epoch,
            "keys_sent": self.keys_sent, "bytes_sent": self.bytes_sent,
            "snapshot_keys": self.snapshot_keys,
        }

    async def ship_until(self, lsn: int, timeout_s: float) -> None:
        """Wait until the target has acknowledged every moving record up to ``lsn``."""
        async with asyncio.timeout(timeout_s):
            async with self._shipped:
                await self._shipped.wait_for(
                    lambda: self.shipped_lsn >= lsn or not self.running)
        if self.shipped_lsn < lsn:
            raise Unavailable(f"the export stopped before LSN {lsn}: {self.error}")

    # -- the work ------------------------------------------------------------------------

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                self._session = session
                await self._post("/internal/migration/import/begin", {})
                self.phase = "snapshot"
                await self._send_view()
                self.phase = "tail"
                await self._follow_tail()
        except asyncio.CancelledError:
            self.phase = "stopped"
            raise
        except Exception as exc:  # reported to the coordinator, which restarts or aborts
            self.phase = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("export failed", extra=log_fields(
                migration=self.migration_id, target=self.target_url, error=self.error))
        finally:
            async with self._shipped:
                self._shipped.notify_all()

    async def _send_view(self) -> None:
        view = await self.store.consistent_view()
        self.view_lsn = view.lsn
        now = time.time()
        batch: list[Record] = []
        size = 0
        async for key, value, compressed, version, expires_at in view.rows:
            if expires_at is not None and expires_at <= now:
                continue
            if not self._exports(key):
                continue
            batch.append(["put", key, value, compressed, expires_at, version])
            size += len(key) + len(value)
            self.snapshot_keys += 1
            if len(batch) >= BATCH_KEYS or size >= BATCH_BYTES:
                await self._send(batch, size)
                batch, size = [], 0
        if batch:
            await self._send(batch, size)
        await self._mark_shipped(view.lsn)

    async def _follow_tail(self) -> None:
        wal = self.store.wal
        while True:
            applied = self.store.applied_lsn
            if applied <= self.shipped_lsn:
                await asyncio.sleep(TAIL_IDLE_S)
                continue
            entries = await asyncio.to_thread(_read_tail, wal, self.shipped_lsn + 1, applied)
            if not entries:
                await asyncio.sleep(TAIL_IDLE_S)
                continue
            batch: list[Record] = []
            size = 0
            for entry in entries:
                # A session record matters on the target only for a write it receives: in
                # the tail, sessions go with an entry that writes a moving key, and only then.
                moving = any(not is_reserved(m.key) and self.arcs.moves(m.key)
                             for m in entry.mutations)
                if not moving:
                    continue
                for m in entry.mutations:
                    if not self._exports(m.key):
                        continue
                    if m.kind == MutationKind.PUT:
                        batch.append(["put", m.key, m.value, m.compressed, m.expires_at,
                                      entry.lsn])
                        size += len(m.key) + len(m.value)
                    elif not is_reserved(m.key):  # a session eviction stays local
                        batch.append(["del", m.key, b"", False, None, entry.lsn])
                        size += len(m.key)
                if len(batch) >= BATCH_KEYS or size >= BATCH_BYTES:
                    await self._send(batch, size, pause=False)
                    batch, size = [], 0
            if batch:
                await self._send(batch, size, pause=False)
            await self._mark_shipped(entries[-1].lsn)

    def _exports(self, key: bytes) -> bool:
        """A key in the moving arcs, or any exactly-once session record: sessions are kept
        per client, not per key, so the whole table goes to the target, which keeps the
        highest ``seq`` per client (a retry that crosses the flip is answered there from
        its record instead of being applied twice)."""
        if is_reserved(key):
            return key.startswith(SESSION_PREFIX)
        return self.arcs.moves(key)

    async def _mark_shipped(self, lsn: int) -> None:
        async with self._shipped:
            self.shipped_lsn = max(self.shipped_lsn, lsn)
            self._shipped.notify_all()

    async def _send(self, records: list[Record], size: int, *, pause: bool = True) -> None:
        """One batch to the target. The pause throttles the bulk copy only: the tail must
        keep up with the source's write rate, or the fence would never come."""
        await self._post("/internal/migration/import", {"records": records})
        self.keys_sent += len(records)
        self.bytes_sent += size
        if pause and BATCH_PAUSE_S:
            await asyncio.sleep(BATCH_PAUSE_S)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        assert self._session is not None
        payload = {"id": self.migration_id, "source": self.arcs.source,
                   "attempt": self.attempt, "ring": self.arcs.current.to_dict(),
                   "target_ring": self.arcs.target_ring.to_dict(),
                   "target": self.arcs.target, **body}
        headers = {"Content-Type": wire.MSGPACK, "Accept": wire.MSGPACK, **auth_headers()}
        async with self._session.post(f"{self.target_url}{path}", data=wire.pack(payload),
                                      headers=headers) as resp:
            raw = await resp.read()
            answer = wire.unpack(raw) if raw else None
            if resp.status != 200:
                if isinstance(answer, dict) and "error" in answer:
                    raise error_from_dict(answer)
                raise ShardKVError(f"{path} answered {resp.status}")
            return answer

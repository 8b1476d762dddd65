"""The source primary's side of a migration: stream the moving arcs to the target primaries.

Two phases, as a range snapshot plus log in a learner-based design (docs/resharding.md):

1. the rows of the moving arcs, each as of LSN ``L0`` or later (``Store.migration_view``:
   keys selected a chunk at a time before any row is read; writes go on meanwhile), in
   bounded batches paced by the adaptive throttle (``throttle.py``);
2. the WAL from ``L0 + 1``, only up to the applied LSN (entries a majority holds: a failover
   can never roll back what was exported), filtered the same way, until stopped.

Each record goes to its destination (its owner under the target ring): one stream of an add
has one target, the stream of a removed shard fans out to every other shard. Records keep
their order per target; exactly-once session rows go to every target that receives a write
of their entry (the whole table with the view).

``ship_until(lsn)`` waits until everything up to ``lsn`` has been acknowledged by every
target (the fence uses it for the final catch-up). Batches go to
``POST /internal/migration/import`` with the cluster credential, msgpack-encoded; a batch is
at most ``BATCH_KEYS`` records or ``BATCH_BYTES`` bytes per target, so memory stays bounded
whatever the size of the shard.
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
from shardkv.node.migration.loop_slices import SLICE_KEYS, pack_with_records
from shardkv.node.migration.stage_clock import StageClock
from shardkv.node.migration.throttle import LoopLagThrottle
from shardkv.node.storage.sessions import SESSION_PREFIX, is_reserved
from shardkv.node.storage.store import Store
from shardkv.node.wal.record import MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import WriteAheadLog

logger = logging.getLogger(__name__)

# 4000: a batch's fixed costs (a request each way, an entry, its fsync, a throttle check)
# were paid every 1000 keys; 4000 doubled the copy's rate at load 12 (docs/resharding.md).
BATCH_KEYS = int(os.environ.get("SHARDKV_MIGRATION_BATCH_KEYS") or 4000)
BATCH_BYTES = 1 << 20
# A pause after each batch of the bulk copy: a throttle for a loaded cluster (the foreground
# load keeps its share), and what lets a test land a fault in the middle of a copy.
BATCH_PAUSE_S = float(os.environ.get("SHARDKV_MIGRATION_BATCH_PAUSE_S") or 0.0)
# Bulk-copy batches in flight at once (all targets together): the source reads and encodes
# the next batches while a target writes one through its WAL. Order does not matter there:
# each key appears once in the view, and the importer keeps the newest version anyway.
PIPELINE = max(1, int(os.environ.get("SHARDKV_MIGRATION_PIPELINE") or 4))
TAIL_READ_ENTRIES = 2000
TAIL_IDLE_S = 0.02
REQUEST_TIMEOUT_S = 30.0

# A tuple, not a list: once a young collection has seen that it holds only atoms, the cyclic
# GC stops tracking it, so records waiting in a batch never reach the old generation (whose
# full collections walk everything the node holds: 0.1-0.25 s each on a loaded source).
Record = tuple[Any, ...]


def _read_tail(wal: WriteAheadLog, start: int, end: int) -> list[WalEntry]:
    """Entries ``start..end`` (at most TAIL_READ_ENTRIES), read in a worker thread."""
    entries = wal.read_from(start)
    return list(itertools.islice(itertools.takewhile(lambda e: e.lsn <= end, entries),
                                 TAIL_READ_ENTRIES))


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Batches:
    """The records waiting to go, per target shard."""

    def __init__(self) -> None:
        self.records: dict[str, list[Record]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, target: str, record: Record, size: int) -> bool:
        """Queue ``record``; True when the target's batch is full."""
        batch = self.records.setdefault(target, [])
        batch.append(record)
        self.sizes[target] = self.sizes.get(target, 0) + size
        return len(batch) >= BATCH_KEYS or self.sizes[target] >= BATCH_BYTES

    def take(self, target: str) -> tuple[list[Record], int]:
        return self.records.pop(target, []), self.sizes.pop(target, 0)

    def pending(self) -> list[str]:
        return [t for t, batch in self.records.items() if batch]


class ArcExport:
    """One export attempt of one migration from this (source) node to the target primaries
    (``routes``: target shard -> primary URL)."""

    def __init__(self, store: Store, migration_id: str, attempt: str, arcs: MovingArcs,
                 routes: dict[str, str], throttle: LoopLagThrottle | None = None) -> None:
        self.store = store
        self.migration_id = migration_id
        self.attempt = attempt
        self.arcs = arcs
        self.routes = {shard: url.rstrip("/") for shard, url in routes.items()}
        self.phase = "starting"
        self.view_lsn: int | None = None
        self.shipped_lsn = 0
        self.keys_sent = 0
        self.bytes_sent = 0
        self.snapshot_keys = 0
        # Per target, the highest LSN its answers named (import/begin and import): at or
        # above everything this attempt wrote there. The flip records it for watches.
        self.target_lsns: dict[str, int] = {}
        self.error: str | None = None
        self.started = time.monotonic()
        self._shipped = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # Already watching the loop when the node started it on seeing the migration in its
        # map (then its baseline is ready and ``calibrate`` does not hold up the copy).
        self.throttle = throttle or LoopLagThrottle()
        # The bulk copy's time: waiting for acknowledgements (a free pipeline slot), the
        # throttle, hashing (select), encoding, and each batch's round trip.
        self.clock = StageClock()

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
            "source": self.arcs.source, "targets": dict(sorted(self.routes.items())),
            "phase": self.phase, "error": self.error,
            "view_lsn": self.view_lsn, "shipped_lsn": self.shipped_lsn,
            "applied_lsn": store.applied_lsn, "epoch": store.epoch,
            "keys_sent": self.keys_sent, "bytes_sent": self.bytes_sent,
            "snapshot_keys": self.snapshot_keys, "throttle": self.throttle.status(),
            "target_lsns": dict(sorted(self.target_lsns.items())),
            "copy_clock": self.clock.status(),
        }

    async def ship_until(self, lsn: int, timeout_s: float) -> None:
        """Wait until every target has acknowledged every moving record up to ``lsn``."""
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
                self.throttle.start()  # watches the loop before the copy: its baseline
                try:
                    with self.clock.waited("begin"):
                        await asyncio.gather(*(self._post(
                            t, "/internal/migration/import/begin", {})
                            for t in sorted(self.routes)))
                    with self.clock.waited("calibrate"):
                        await self.throttle.calibrate()
                    self.phase = "snapshot"
                    self.clock.start()
                    await self._send_view()
                    self.clock.mark()
                finally:
                    await self.throttle.stop()
                self.phase = "tail"
                await self._follow_tail()
        except asyncio.CancelledError:
            self.phase = "stopped"
            raise
        except Exception as exc:  # reported to the coordinator, which restarts or aborts
            self.phase = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("export failed", extra=log_fields(
                migration=self.migration_id, targets=sorted(self.routes), error=self.error))
        finally:
            for task in self._in_flight:
                task.cancel()
            async with self._shipped:
                self._shipped.notify_all()

    async def _send_view(self) -> None:
        everyone = sorted(self.routes)
        # Destinations of the selected keys, filled by ``select`` a chunk at a time: the
        # engine asks it before decoding any row, so the two thirds of the shard that stay
        # are hashed once each and never read.
        chosen: dict[bytes, tuple[str, ...]] = {}
        alone = {target: (target,) for target in everyone}  # shared: no container per key
        all_targets = tuple(everyone)

        clock = self.clock

        def select(keys: list[bytes]) -> list[bool]:
            began, cpu = time.perf_counter(), time.thread_time()
            chosen.clear()
            destinations = self.arcs.destinations(keys)
            if keys and keys[0][:1] != b"\x00":
                # Keys come in key order and reserved rows sort first (b"\x00..."): a chunk
                # that does not start with one holds none, and only its moving third is
                # looked at key by key.
                picked = [destination is not None for destination in destinations]
                for key, destination in itertools.compress(
                        zip(keys, destinations, strict=True), picked):
                    chosen[key] = alone[destination]  # type: ignore[index]  # picked: not None
                clock.add("select", time.perf_counter() - began,
                          cpu=time.thread_time() - cpu)
                return picked
            for key, destination in zip(keys, destinations, strict=True):
                if destination is not None and not is_reserved(key):
                    chosen[key] = alone[destination]
                elif key.startswith(SESSION_PREFIX):
                    # Exactly-once sessions are per client, not per key: every target gets
                    # the whole table, and keeps the highest ``seq`` per client (a retry that
                    # crosses the flip is answered there from its record, not applied twice).
                    chosen[key] = all_targets
            picked = [key in chosen for key in keys]
            clock.add("select", time.perf_counter() - began, cpu=time.thread_time() - cpu)
            return picked

        view = await self.store.migration_view(select, SLICE_KEYS)
        self.view_lsn = view.lsn
        now = time.time()
        batches = _Batches()
        async for key, value, compressed, version, expires_at in view.rows:
            if expires_at is not None and expires_at <= now:
                continue
            destinations = chosen[key]
            if destinations is not all_targets:
                self.snapshot_keys += 1
            record = ("put", key, value, compressed, expires_at, version)
            for target in destinations:
                if batches.add(target, record, len(key) + len(value)):
                    await self._send_pipelined(target, *batches.take(target))
        for target in batches.pending():
            await self._send_pipelined(target, *batches.take(target))
        with clock.waited("drain"):
            await self._drain()
        await self._mark_shipped(view.lsn)

    async def _send_pipelined(self, target: str, records: list[Record], size: int) -> None:
        """Send without waiting for the answer, at most PIPELINE batches in flight, paced by
        the throttle; a failed batch fails the export at the next call (or at ``_drain``)."""
        clock = self.clock
        began = time.perf_counter()
        await self.throttle.wait()
        waited = time.perf_counter()
        clock.add("throttle", waited - began)
        while len(self._in_flight) >= PIPELINE:
            done, _ = await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._in_flight -= done
            for task in done:
                task.result()
        clock.add("ack_wait", time.perf_counter() - waited)
        task = asyncio.create_task(self._send(target, records, size))
        # Its failure is raised by the next wait or by _drain; after the export failed or
        # stopped, nobody waits for it: retrieve it here so it is not reported as lost.
        task.add_done_callback(_retrieve)
        self._in_flight.add(task)

    async def _drain(self) -> None:
        tasks, self._in_flight = self._in_flight, set()
        await asyncio.gather(*tasks)

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
            batches = _Batches()
            for entry in entries:
                # A session record matters on a target only for a write it receives: in the
                # tail, sessions go with an entry that writes a key moving there, and only
                # there; a session eviction stays local.
                destinations = {d for m in entry.mutations if not is_reserved(m.key)
                                for d in [self.arcs.destination(m.key)] if d is not None}
                if not destinations:
                    continue
                for m in entry.mutations:
                    if is_reserved(m.key):
                        if m.kind != MutationKind.PUT or not m.key.startswith(SESSION_PREFIX):
                            continue
                        targets = sorted(destinations)
                    else:
                        destination = self.arcs.destination(m.key)
                        if destination is None:
                            continue
                        targets = [destination]
                    if m.kind == MutationKind.PUT:
                        record = ("put", m.key, m.value, m.compressed, m.expires_at, entry.lsn)
                        size = len(m.key) + len(m.value)
                    else:
                        record = ("del", m.key, b"", False, None, entry.lsn)
                        size = len(m.key)
                    for target in targets:
                        if batches.add(target, record, size):
                            await self._send(target, *batches.take(target), pause=False)
            await self._flush(batches, pause=False)
            await self._mark_shipped(entries[-1].lsn)

    async def _flush(self, batches: _Batches, *, pause: bool) -> None:
        await asyncio.gather(*(self._send(t, *batches.take(t), pause=pause)
                               for t in batches.pending()))

    async def _mark_shipped(self, lsn: int) -> None:
        async with self._shipped:
            self.shipped_lsn = max(self.shipped_lsn, lsn)
            self._shipped.notify_all()

    async def _send(self, target: str, records: list[Record], size: int, *,
                    pause: bool = True) -> None:
        """One batch to one target. The pause throttles the bulk copy only: the tail must
        keep up with the source's write rate, or the fence would never come."""
        began = time.perf_counter()
        await self._post(target, "/internal/migration/import", {"records": records})
        if pause:
            self.clock.add("round_trip", time.perf_counter() - began)
        self.keys_sent += len(records)
        self.bytes_sent += size
        if pause and BATCH_PAUSE_S:
            await asyncio.sleep(BATCH_PAUSE_S)

    async def _post(self, target: str, path: str, body: dict[str, Any]) -> Any:
        assert self._session is not None
        payload = {"id": self.migration_id, "source": self.arcs.source,
                   "attempt": self.attempt, "ring": self.arcs.current.to_dict(),
                   "target_ring": self.arcs.target_ring.to_dict(), "target": target,
                   "targets": sorted(self.arcs.targets), **body}
        headers = {"Content-Type": wire.MSGPACK, "Accept": wire.MSGPACK, **auth_headers()}
        records = payload.pop("records", None)
        if records is None:
            with self.clock.timed("encode"):
                data = wire.pack(payload)
        else:
            # A batch is encoded a slice at a time (loop_slices.py): its wall time then
            # includes what the loop ran in between.
            with self.clock.waited("encode"):
                data = await pack_with_records(payload, records)
        async with self._session.post(f"{self.routes[target]}{path}", data=data,
                                      headers=headers) as resp:
            raw = await resp.read()
            answer = wire.unpack(raw) if raw else None
            if resp.status != 200:
                if isinstance(answer, dict) and "error" in answer:
                    raise error_from_dict(answer)
                raise ShardKVError(f"{path} answered {resp.status}")
            if isinstance(answer, dict) and isinstance(answer.get("lsn"), int):
                self.target_lsns[target] = max(self.target_lsns.get(target, 0), answer["lsn"])
            return answer

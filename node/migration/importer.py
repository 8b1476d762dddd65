"""The target primary's side of a migration: write what the sources send, newest wins.

Records arrive as ``[kind, key, value, compressed, expires_at, source_version]`` (kind
``"put"`` or ``"del"``), first from a source's rows, then from its WAL tail. The
importer remembers, per key, the source version it last wrote, and skips a record that is not
newer: an export that restarts, or a tail entry the view already contained, changes nothing.
Each batch becomes entries of this shard's WAL of at most ``SLICE_KEYS`` records each
(loop_slices.py: the loop serves others between them; one group commit still takes them
all), write concern ``majority`` by default, so the target's replicas hold the whole batch
before it is acknowledged to the source.

Every imported version must be below this shard's next LSN (its floor was raised above the
sources' LSNs): a record at or above it would get a version that is not greater than the one
it had, so the batch is refused and the migration fails instead.

A new export attempt from a source first deletes what an earlier attempt from that source
left here (keys the current ring gives to that source): keys deleted on the source between
two attempts must not survive on the target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shardkv.cluster.errors import InvalidArgument, StaleEpoch, VersionMismatch
from shardkv.cluster.limits import MAX_KEY_BYTES, as_key
from shardkv.node.migration.arcs import MovingArcs, owners
from shardkv.node.migration.loop_slices import SLICE_KEYS
from shardkv.node.migration.stage_clock import StageClock
from shardkv.node.storage.sessions import SESSION_PREFIX, seq_and_time_of
from shardkv.node.storage.store import Store
from shardkv.node.wal.record import Mutation, MutationKind

WIPE_PAGE = 500


@dataclass(slots=True)
class SourceStream:
    attempt: str
    arcs: MovingArcs
    versions: dict[bytes, int] = field(default_factory=dict)
    keys: int = 0
    bytes: int = 0


class ArcImporter:
    """One per node; holds the streams of the migration in progress (one per source)."""

    def __init__(self) -> None:
        self.migration_id: str | None = None
        self.streams: dict[str, SourceStream] = {}
        self.session_seqs: dict[bytes, int] = {}  # session key -> highest seq imported
        # The imports' time (decoding the body, filtering, the WAL write up to applied) and
        # the log's syncs meanwhile, from the first batch to the last.
        self.clock = StageClock()
        self._wal_at_start: tuple[int, float, int] | None = None
        self._wal_now: tuple[int, float, int] = (0, 0.0, 0)
        self._ordering = asyncio.Lock()

    async def begin(self, store: Store, migration_id: str, attempt: str,
                    arcs: MovingArcs) -> int:
        """Start (or restart) the stream from ``arcs.source``; returns how many leftover keys
        of an earlier attempt were deleted."""
        # Never in the middle of a batch (its slices are ordered over several turns of the
        # loop): a batch of an earlier attempt is wholly in the log, and applied (the wipe
        # reads the engine), before the wipe looks for what it left.
        async with self._ordering:
            if self.migration_id != migration_id:
                self.migration_id, self.streams, self.session_seqs = migration_id, {}, {}
                self.clock, self._wal_at_start = StageClock(), None
            stream = self.streams.get(arcs.source)
            if stream is not None and stream.attempt == attempt:
                return 0
            self.streams[arcs.source] = SourceStream(attempt, arcs)
            await store.barrier()
            return await _wipe_from(store, arcs)

    async def apply(self, store: Store, migration_id: str, source: str, attempt: str,
                    records: Sequence[Any]) -> dict[str, int]:
        writes: list[asyncio.Future[int]] = []
        # One batch at a time, in arrival order, from its first record filtered to its last
        # entry ordered: the slices of two batches never interleave, so a key's newer record
        # is always ordered after its older one (the version check and the log agree).
        try:
            async with self._ordering:
                # Looked up under the lock: a ``begin`` of a new attempt may have come first.
                stream = self.streams.get(source)
                if (self.migration_id != migration_id or stream is None
                        or stream.attempt != attempt):
                    raise StaleEpoch(f"no import stream {migration_id}/{source}/{attempt} "
                                     f"here; begin again", source=source)
                clock = self.clock
                clock.start()
                if self._wal_at_start is None:
                    self._wal_at_start = _wal_counters(store)
                # Every imported version must be below the next LSN as the batch begins.
                next_lsn = store.last_lsn + 1
                lsn = store.last_lsn
                applied = await self._order(store, stream, records, next_lsn, writes)
        except BaseException:
            for task in writes:  # already ordered: nobody is left to see their outcome
                task.add_done_callback(_retrieve)
            raise
        if writes:
            began = time.perf_counter()
            results = await asyncio.gather(*writes, return_exceptions=True)
            clock.add("write", time.perf_counter() - began)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            lsn = max(r for r in results if not isinstance(r, BaseException))
        clock.mark()
        self._wal_now = _wal_counters(store)
        return {"applied": applied, "lsn": lsn}

    async def _order(self, store: Store, stream: SourceStream, records: Sequence[Any],
                     next_lsn: int, writes: list[asyncio.Future[int]]) -> int:
        """Filter ``records`` a slice at a time and order each slice's entry (appended to
        ``writes``); returns how many mutations were ordered."""
        clock = self.clock
        ordered = 0
        for start in range(0, len(records), SLICE_KEYS):
            if start:
                # The loop's turn between slices; the entry of the slice before is ordered
                # first (its task was queued before this one resumes).
                await asyncio.sleep(0)
            began, cpu = time.perf_counter(), time.thread_time()
            mutations, written = self._filter(stream, records[start:start + SLICE_KEYS],
                                              next_lsn)
            clock.add("filter", time.perf_counter() - began, cpu=time.thread_time() - cpu)
            if mutations:
                # Ordered at once by the task (nothing awaits before the store's lock, which
                # queues in order), applied with the others: one group commit for all.
                writes.append(asyncio.ensure_future(store.write_imported(mutations)))
                ordered += len(mutations)
                stream.keys += len(mutations)
                stream.bytes += written
        return ordered

    def _filter(self, stream: SourceStream, records: Sequence[Any],
                next_lsn: int) -> tuple[list[Mutation], int]:
        """The mutations to write for ``records`` (newest version wins; the highest ``seq``
        of a client's session record), and their bytes. No await: the versions it notes
        must be ordered in the log before any other batch is filtered."""
        mutations: list[Mutation] = []
        append, put = mutations.append, MutationKind.PUT
        versions = stream.versions
        known = versions.get
        written = 0
        for record in records:  # a thousand per slice: names looked up once
            kind, key, value, compressed, expires_at, version = _parse(record)
            if version >= next_lsn:
                raise VersionMismatch(
                    f"imported version {version} is not below this shard's next LSN "
                    f"{next_lsn}: the LSN floor is too low", version=version)
            if key[:1] == b"\x00" and key.startswith(SESSION_PREFIX):
                # Sessions come from every source: the highest seq of a client wins.
                seq = seq_and_time_of(value)[0] if kind == "put" else -1
                if seq <= self.session_seqs.get(key, -1):
                    continue
                self.session_seqs[key] = seq
            elif version <= known(key, -1):
                continue
            versions[key] = version
            if kind == "put":
                append(Mutation(put, key, value, compressed, expires_at))
                written += len(key) + len(value)
            else:
                append(Mutation(MutationKind.DELETE, key))
        return mutations, written

    def status(self) -> dict[str, Any]:
        start = self._wal_at_start or self._wal_now
        entries, sync_s, syncs = (now - then for now, then in zip(self._wal_now, start,
                                                                  strict=True))
        return {
            "migration": self.migration_id,
            "sources": {s: {"attempt": st.attempt, "keys": st.keys, "bytes": st.bytes}
                        for s, st in sorted(self.streams.items())},
            "copy_clock": {**self.clock.status(), "wal_entries": entries,
                           "wal_syncs": syncs, "wal_sync_s": round(sync_s, 3)},
        }


def _retrieve(task: asyncio.Future[int]) -> None:
    if not task.cancelled():
        task.exception()


def _wal_counters(store: Store) -> tuple[int, float, int]:
    """(entries appended, seconds in fsync, syncs) of the store's log so far."""
    stats = store.wal.stats()
    return stats.appended_entries, stats.sync_seconds_total, stats.syncs


def _parse(record: Any) -> tuple[str, bytes, bytes, bool, float | None, int]:
    if (type(record) is tuple or type(record) is list) and len(record) == 6:
        # What a source sends, by far the common case: checked by exact types, no copies.
        kind, key, value, compressed, expires_at, version = record
        if (type(key) is bytes and 0 < len(key) <= MAX_KEY_BYTES and type(value) is bytes
                and type(version) is int and version >= 0
                and (compressed is False or compressed is True)
                and (expires_at is None or type(expires_at) is float)
                and (kind == "put" or kind == "del") and key[:1] != b"\x00"):
            return kind, key, value, compressed, expires_at, version
    return _parse_slowly(record)


def _parse_slowly(record: Any) -> tuple[str, bytes, bytes, bool, float | None, int]:
    if not isinstance(record, list | tuple) or len(record) != 6:
        raise InvalidArgument("an import record is [kind, key, value, compressed, expires_at, "
                              "version]")
    kind, key, value, compressed, expires_at, version = record
    if kind not in ("put", "del"):
        raise InvalidArgument(f"import record kind must be put or del, got {kind!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidArgument("import record version must be a non-negative integer")
    if not isinstance(value, bytes | bytearray) or (
            expires_at is not None and not isinstance(expires_at, int | float)):
        raise InvalidArgument("import record value must be bytes, expires_at a number or nil")
    if not isinstance(key, bytes | bytearray | str) or not key:
        raise InvalidArgument("import record key must be non-empty bytes")
    raw_key = key.encode() if isinstance(key, str) else bytes(key)
    if not raw_key.startswith(SESSION_PREFIX):
        raw_key = as_key(raw_key)
    return kind, raw_key, bytes(value), bool(compressed), expires_at, version


async def _wipe_from(store: Store, arcs: MovingArcs) -> int:
    """Delete every key here that the current ring gives to ``arcs.source`` (through the
    WAL, so the replicas delete them too)."""
    deleted = 0
    cursor: bytes | None = None
    while True:
        page = await store.scan(cursor=cursor, limit=WIPE_PAGE)
        keys = [key for key, _ in page.items]
        doomed = [key for key, owner in zip(keys, owners(arcs.current, keys), strict=True)
                  if owner == arcs.source]
        if doomed:
            count, _ = await store.mdelete(doomed)
            deleted += count
        if page.cursor is None:
            return deleted
        cursor = page.cursor

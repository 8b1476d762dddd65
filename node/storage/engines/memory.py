"""The in-memory engine: a sorted table of compact tuples, plus a lazy expiry heap.

Memory per key is what limits this engine, so a key costs one ``SortedDict`` slot (a dict
entry and a sorted-list pointer) and one plain 4-tuple ``(value, compressed, version,
expires_at)``; nothing else is kept per key. Plain tuples, not ``StoredItem`` instances, are
stored on purpose: CPython's cyclic GC stops tracking an exact tuple of atoms (bytes, ints,
None) after it survives one collection, but never a tuple subclass, so a table of millions of
NamedTuples would be walked by every full collection (pauses of a tenth of a second and more).
Items are wrapped as ``StoredItem`` (a C-level cast, no copy of the fields) on the way out.

Keys with a TTL also get a heap entry ``(expires_at, key)``. The heap is lazy: an entry
whose key was since rewritten or deleted is recognised as stale (its ``expires_at`` no longer
matches) and dropped when it reaches the top, and the heap is rebuilt when stale entries
outnumber live ones, so rewriting TTL keys in a loop cannot grow it without bound.

All methods are ``async`` to match the interface, but none of them suspends: a caller that
awaits one is never interleaved with another task, which the Store relies on for cheap reads.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import islice
from typing import cast

from shardkv.node.storage.engines.engine import (
    Engine,
    SnapshotRow,
    SnapshotView,
    StoredItem,
    check_apply_order,
)
from shardkv.node.wal.record import MutationKind, WalEntry
from sortedcontainers import SortedDict

# A snapshot stream yields to the event loop after this many rows, so a million-key snapshot
# does not hold the loop for the whole copy-out.
_ROWS_PER_YIELD = 4096
# Rebuild the expiry heap when it holds this many more entries than keys that expire.
_HEAP_SLACK = 1024

_Row = tuple[bytes, bool, int, float | None]  # StoredItem's fields, as a plain tuple
_VERSION = 2
_EXPIRES_AT = 3


def _wrap(row: _Row) -> StoredItem:
    return tuple.__new__(StoredItem, row)


class MemoryEngine(Engine):
    name = "memory"

    def __init__(self) -> None:
        self._items: SortedDict = SortedDict()
        self._applied_lsn = 0
        self._expiry_heap: list[tuple[float, bytes]] = []
        self._expiring = 0  # keys whose current item has an expires_at

    @classmethod
    async def open(cls) -> MemoryEngine:
        return cls()

    @property
    def applied_lsn(self) -> int:
        return self._applied_lsn

    @property
    def key_count(self) -> int:
        return len(self._items)

    async def get(self, key: bytes) -> StoredItem | None:
        row = self._items.get(key)
        return None if row is None else _wrap(row)

    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        get = self._items.get
        return [None if (row := get(key)) is None else _wrap(row) for key in keys]

    async def apply(self, entry: WalEntry) -> None:
        check_apply_order(self.name, self._applied_lsn, entry)
        for mutation in entry.mutations:
            if mutation.kind is MutationKind.PUT:
                self._put(
                    mutation.key,
                    (mutation.value, mutation.compressed, entry.lsn, mutation.expires_at),
                )
            else:
                self._delete(mutation.key)
        self._applied_lsn = entry.lsn

    def _put(self, key: bytes, row: _Row) -> None:
        old = self._items.get(key)
        if old is not None and old[_EXPIRES_AT] is not None:
            self._expiring -= 1
        self._items[key] = row
        expires_at = cast(float | None, row[_EXPIRES_AT])
        if expires_at is not None:
            self._expiring += 1
            heapq.heappush(self._expiry_heap, (expires_at, key))
            if len(self._expiry_heap) > 2 * self._expiring + _HEAP_SLACK:
                self._rebuild_heap()

    def _delete(self, key: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None and old[_EXPIRES_AT] is not None:
            self._expiring -= 1

    def _rebuild_heap(self) -> None:
        self._expiry_heap = [
            (row[_EXPIRES_AT], key)
            for key, row in self._items.items()
            if row[_EXPIRES_AT] is not None
        ]
        heapq.heapify(self._expiry_heap)

    async def scan(
        self, start: bytes | None, end: bytes | None, limit: int
    ) -> list[tuple[bytes, StoredItem]]:
        keys = self._items.irange(minimum=start, maximum=end, inclusive=(True, False))
        items = self._items
        return [(key, _wrap(items[key])) for key in islice(keys, limit)]

    async def expired(self, now: float, limit: int) -> list[tuple[bytes, int]]:
        heap = self._expiry_heap
        found: list[tuple[float, bytes]] = []
        result: list[tuple[bytes, int]] = []
        seen: set[bytes] = set()
        while heap and heap[0][0] <= now and len(result) < limit:
            expires_at, key = heapq.heappop(heap)
            row = self._items.get(key)
            if row is None or row[_EXPIRES_AT] != expires_at:
                continue  # stale: the key was rewritten or deleted since
            if key in seen:
                continue  # a duplicate entry (the key rewritten with the same expiry)
            seen.add(key)
            found.append((expires_at, key))
            result.append((key, row[_VERSION]))
        # The live entries go back: the keys stay until their delete is applied, and a sweep
        # that fails must find them again next time.
        for pair in found:
            heapq.heappush(heap, pair)
        return result

    async def snapshot_view(self) -> SnapshotView:
        # Rows are immutable tuples, so copying the key order and the dict (both C-speed
        # copies) freezes the state; applying continues on the live table meanwhile.
        keys = list(self._items.keys())
        frozen = dict.copy(self._items)
        return SnapshotView(self._applied_lsn, len(keys), _stream_rows(keys, frozen))

    async def load(self, rows: Iterable[SnapshotRow], lsn: int) -> None:
        # Reading a snapshot is seconds of CPU for millions of keys: build the new table in a
        # thread (nothing else touches it yet) and swap it in at once.
        items, heap = await asyncio.to_thread(_build_table, rows)
        self._items = items
        self._expiry_heap = heap
        self._expiring = len(heap)
        self._applied_lsn = lsn

    async def close(self) -> None:
        self._items = SortedDict()
        self._expiry_heap = []
        self._expiring = 0


async def _stream_rows(keys: list[bytes], frozen: dict) -> AsyncIterator[SnapshotRow]:
    for index, key in enumerate(keys):
        yield (key, *frozen[key])
        if index % _ROWS_PER_YIELD == _ROWS_PER_YIELD - 1:
            await asyncio.sleep(0)


def _build_table(rows: Iterable[SnapshotRow]) -> tuple[SortedDict, list[tuple[float, bytes]]]:
    pairs: list[tuple[bytes, _Row]] = []
    heap: list[tuple[float, bytes]] = []
    # Creating millions of container objects triggers the cyclic GC over and over (each pass
    # walks every tracked object so far): two thirds of the load time. These tuples cannot
    # form cycles, so collection is paused for the bulk build (process-wide, for the few
    # seconds recovery takes) and restored after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for key, value, compressed, version, expires_at in rows:
            pairs.append((key, (value, compressed, version, expires_at)))
            if expires_at is not None:
                heap.append((expires_at, key))
    finally:
        if gc_was_enabled:
            gc.enable()
    heapq.heapify(heap)
    # One bulk construction sorts once (snapshot rows arrive sorted, so that is linear)
    # instead of a million single inserts.
    return SortedDict(pairs), heap

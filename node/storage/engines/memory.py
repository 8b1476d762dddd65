"""The in-memory engine: a sorted table of compact rows, plus a lazy expiry heap.

Memory per key is what limits this engine, so a key costs two list slots in a
``SortedTable`` (sorted runs of keys and of rows, no hash table: ``sorted_table.py`` says
why) and one row; nothing else is kept per key. A small value's row is ONE bytes object: a
9-byte header (flags: compressed, has an expiry; the version as an unsigned 64-bit integer),
the expiry as a double when there is one, then the value. That is one object where a tuple
``(value, compressed, version, expires_at)`` is three (the tuple, the value, the version's
int), and bytes are never tracked by the cyclic GC (issue 17: 243 bytes per small key with
tuples in a ``SortedDict``, 163 with packed rows, 128 without the dict;
``python bench/recovery_bench.py``). Reading one costs a header unpack and a copy of the
value, cheap for small values; a value over ``PACK_LIMIT`` bytes keeps the plain 4-tuple, so
a large value is never copied on a read. (Plain tuples, not ``StoredItem`` instances:
CPython's cyclic GC stops tracking an exact tuple of atoms after it survives one collection,
but never a tuple subclass.) Items are turned into ``StoredItem`` on the way out.

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
import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import compress, islice
from typing import Any

from shardkv.node.storage.engines.engine import (
    Engine,
    KeySelect,
    SnapshotRow,
    SnapshotView,
    StoredItem,
    check_apply_order,
)
from shardkv.node.storage.engines.sorted_table import SortedTable
from shardkv.node.wal.record import MutationKind, WalEntry

# A snapshot stream yields to the event loop after this many rows, so a million-key snapshot
# does not hold the loop for the whole copy-out.
_ROWS_PER_YIELD = 4096
# Rebuild the expiry heap when it holds this many more entries than keys that expire.
_HEAP_SLACK = 1024

# A row: StoredItem's fields as a plain tuple (large values), or packed into one bytes object.
_Row = tuple[bytes, bool, int, float | None] | bytes
PACK_LIMIT = 1024  # values up to this many bytes are packed with their header
_HEAD = struct.Struct("<BQ")  # flags, version
_HEAD_EXPIRY = struct.Struct("<BQd")  # flags, version, expires_at
_COMPRESSED = 1
_EXPIRES = 2
_VERSION_LIMIT = 1 << 64
_PUT, _DELETE = int(MutationKind.PUT), int(MutationKind.DELETE)


def _row(value: bytes, compressed: bool, version: int, expires_at: float | None) -> _Row:
    if len(value) > PACK_LIMIT or not 0 <= version < _VERSION_LIMIT:
        return (value, compressed, version, expires_at)
    if expires_at is None:
        return _HEAD.pack(_COMPRESSED if compressed else 0, version) + value
    flags = (_COMPRESSED if compressed else 0) | _EXPIRES
    return _HEAD_EXPIRY.pack(flags, version, expires_at) + value


def _fields(row: _Row) -> tuple[bytes, bool, int, float | None]:
    """(value, compressed, version, expires_at) of a row."""
    if not isinstance(row, bytes):
        return row
    flags, version = _HEAD.unpack_from(row)
    if flags & _EXPIRES:
        return (row[_HEAD_EXPIRY.size:], bool(flags & _COMPRESSED), version,
                _HEAD_EXPIRY.unpack_from(row)[2])
    return (row[_HEAD.size:], bool(flags & _COMPRESSED), version, None)


def _expires_at(row: _Row) -> float | None:
    if not isinstance(row, bytes):
        return row[3]
    if row[0] & _EXPIRES:
        return float(_HEAD_EXPIRY.unpack_from(row)[2])
    return None


def _version(row: _Row) -> int:
    if not isinstance(row, bytes):
        return row[2]
    return int(_HEAD.unpack_from(row)[1])


def _wrap(row: _Row) -> StoredItem:
    return tuple.__new__(StoredItem, _fields(row))


class MemoryEngine(Engine):
    name = "memory"

    def __init__(self) -> None:
        self._items: SortedTable[_Row] = SortedTable()
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

    sync_reads = True

    def live_version(self, key: bytes, now: float) -> int | None:
        row = self._items.get(key)
        if row is None:
            return None
        if not isinstance(row, bytes):
            expires_at = row[3]
            return row[2] if expires_at is None or expires_at > now else None
        if row[0] & _EXPIRES:  # every write of a blind put comes here: no int() wraps
            _, version, expires_at = _HEAD_EXPIRY.unpack_from(row)
            return version if expires_at > now else None  # type: ignore[no-any-return]
        return _HEAD.unpack_from(row)[1]  # type: ignore[no-any-return]

    async def get(self, key: bytes) -> StoredItem | None:
        row = self._items.get(key)
        return None if row is None else _wrap(row)

    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        get = self._items.get
        return [None if (row := get(key)) is None else _wrap(row) for key in keys]

    async def apply(self, entry: WalEntry) -> None:
        check_apply_order(self.name, self._applied_lsn, entry)
        lsn = entry.lsn
        # Every row of an entry has the same version: its header is packed once per entry,
        # and the common put (a small value, no expiry) is set with no call per key (an
        # import or an mput writes a thousand keys per entry).
        heads = ((_HEAD.pack(0, lsn), _HEAD.pack(_COMPRESSED, lsn))
                 if 0 <= lsn < _VERSION_LIMIT else None)
        put = MutationKind.PUT
        set_row = self._items.set
        for mutation in entry.mutations:
            if mutation.kind is not put:
                self._delete(mutation.key)
            elif heads is None or mutation.expires_at is not None or len(
                    mutation.value) > PACK_LIMIT:
                self._put(mutation.key, _row(mutation.value, mutation.compressed, lsn,
                                             mutation.expires_at))
            else:
                head = heads[1] if mutation.compressed else heads[0]
                old = set_row(mutation.key, head + mutation.value)
                # _expires_at(old) is not None, inlined: nearly every put (and every session
                # record, logged with each stamped write) replaces a row.
                if old is not None and (old[0] & _EXPIRES if type(old) is bytes
                                        else old[3] is not None):
                    self._expiring -= 1
        self._applied_lsn = lsn

    async def apply_wire(self, raw: list[Any]) -> None:
        # Recovery replays the log through here: the msgpack lists read straight into rows,
        # with no WalEntry or Mutation built (issue 17: about 40 % of the replay's CPU). Only
        # a mutation's first five fields make the stored state; later ones (the sweeper's
        # ``expired`` mark, anything appended to the record since) do not.
        lsn, _epoch, _ts, mutations = raw
        if type(lsn) is not int or lsn <= self._applied_lsn:
            raise ValueError(f"{self.name}: entry lsn {lsn!r} is not after {self._applied_lsn}")
        for mutation in mutations:
            kind, key, value, compressed, expires_at = mutation[:5]
            if kind == _PUT:
                self._put(bytes(key), _row(bytes(value), bool(compressed), lsn, expires_at))
            elif kind == _DELETE:
                self._delete(bytes(key))
            else:
                raise ValueError(f"unknown mutation kind {kind!r}")
        self._applied_lsn = lsn

    def _put(self, key: bytes, row: _Row) -> None:
        old = self._items.set(key, row)
        if old is not None and _expires_at(old) is not None:
            self._expiring -= 1
        expires_at = _expires_at(row)
        if expires_at is not None:
            self._expiring += 1
            heapq.heappush(self._expiry_heap, (expires_at, key))
            if len(self._expiry_heap) > 2 * self._expiring + _HEAP_SLACK:
                self._rebuild_heap()

    def _delete(self, key: bytes) -> None:
        old = self._items.pop(key)
        if old is not None and _expires_at(old) is not None:
            self._expiring -= 1

    def _rebuild_heap(self) -> None:
        self._expiry_heap = [
            (expires_at, key)
            for key, row in self._items.items()
            if (expires_at := _expires_at(row)) is not None
        ]
        heapq.heapify(self._expiry_heap)

    async def scan(
        self, start: bytes | None, end: bytes | None, limit: int
    ) -> list[tuple[bytes, StoredItem]]:
        return [(key, _wrap(row)) for key, row in islice(self._items.items(start, end), limit)]

    async def expired(self, now: float, limit: int) -> list[tuple[bytes, int]]:
        heap = self._expiry_heap
        found: list[tuple[float, bytes]] = []
        result: list[tuple[bytes, int]] = []
        seen: set[bytes] = set()
        while heap and heap[0][0] <= now and len(result) < limit:
            expires_at, key = heapq.heappop(heap)
            row = self._items.get(key)
            if row is None or _expires_at(row) != expires_at:
                continue  # stale: the key was rewritten or deleted since
            if key in seen:
                continue  # a duplicate entry (the key rewritten with the same expiry)
            seen.add(key)
            found.append((expires_at, key))
            result.append((key, _version(row)))
        # The live entries go back: the keys stay until their delete is applied, and a sweep
        # that fails must find them again next time.
        for pair in found:
            heapq.heappush(heap, pair)
        return result

    async def snapshot_view(self, select: KeySelect | None = None) -> SnapshotView:
        # Rows are immutable, so copying the keys and rows (C-speed list copies) freezes the
        # state; applying continues on the live table meanwhile.
        keys, rows = self._items.frozen()
        return SnapshotView(self._applied_lsn, len(keys), _stream_rows(keys, rows, select))

    async def migration_view(self, select: KeySelect,
                             slice_rows: int | None = None) -> SnapshotView:
        # No copy of the table: copying a million keys holds the loop for 100 ms on a quiet
        # machine and for a second on a busy one, which every foreground request of the
        # source would wait out. The live table is read a chunk at a time instead.
        return SnapshotView(self._applied_lsn, len(self._items),
                            self._live_rows(select, slice_rows or _ROWS_PER_YIELD))

    async def _live_rows(self, select: KeySelect,
                         slice_rows: int) -> AsyncIterator[SnapshotRow]:
        async for pairs in self._live_chunks(slice_rows):
            # Selected and decoded with no await after the chunk was read (the table may
            # change between chunks, never within one).
            keys = [key for key, _ in pairs]
            rows = [(key, *_fields(row)) for key, row in compress(pairs, select(keys))]
            for row in rows:
                yield row

    async def migration_keys(self, select: KeySelect,
                             slice_rows: int | None = None) -> AsyncIterator[list[bytes]]:
        async for pairs in self._live_chunks(slice_rows or _ROWS_PER_YIELD):
            keys = [key for key, _ in pairs]
            kept = list(compress(keys, select(keys)))
            if kept:
                yield kept

    async def _live_chunks(self, rows: int) -> AsyncIterator[list[tuple[bytes, _Row]]]:
        """The live table, ``rows`` (key, row) pairs at a time, each chunk after the last key
        of the one before (read with no await; the loop runs between chunks)."""
        after: bytes | None = None
        while True:
            pairs = list(islice(self._items.items(after), rows + 1))
            if after is not None and pairs and pairs[0][0] == after:
                del pairs[0]
            else:
                del pairs[rows:]
            if not pairs:
                return
            after = pairs[-1][0]
            yield pairs
            await asyncio.sleep(0)

    async def load(self, rows: Iterable[SnapshotRow], lsn: int) -> None:
        # Reading a snapshot is seconds of CPU for millions of keys: build the new table in a
        # thread (nothing else touches it yet) and swap it in at once.
        items, heap = await asyncio.to_thread(_build_table, rows)
        self._items = items
        self._expiry_heap = heap
        self._expiring = len(heap)
        self._applied_lsn = lsn

    async def close(self) -> None:
        self._items = SortedTable()
        self._expiry_heap = []
        self._expiring = 0


async def _stream_rows(keys: list[bytes], rows: list[_Row],
                       select: KeySelect | None) -> AsyncIterator[SnapshotRow]:
    # The keys are selected before any row is decoded: a migration reads a third of them.
    for start in range(0, len(keys), _ROWS_PER_YIELD):
        chunk: Iterable[tuple[bytes, _Row]] = zip(
            keys[start:start + _ROWS_PER_YIELD], rows[start:start + _ROWS_PER_YIELD],
            strict=True)
        if select is not None:
            chunk = compress(chunk, select(keys[start:start + _ROWS_PER_YIELD]))
        for key, row in chunk:
            yield (key, *_fields(row))
        await asyncio.sleep(0)


def _build_table(
    rows: Iterable[SnapshotRow],
) -> tuple[SortedTable[_Row], list[tuple[float, bytes]]]:
    keys: list[bytes] = []
    packed: list[_Row] = []
    heap: list[tuple[float, bytes]] = []
    # Creating millions of container objects triggers the cyclic GC over and over (each pass
    # walks every tracked object so far): two thirds of the load time. These tuples cannot
    # form cycles, so collection is paused for the bulk build (process-wide, for the few
    # seconds recovery takes) and restored after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        add_key = keys.append
        append = packed.append
        pack = _HEAD.pack
        for key, value, compressed, version, expires_at in rows:
            # _row(), inlined for the common row (small value, no expiry): this loop runs
            # once per key of the snapshot at every start.
            add_key(key)
            if expires_at is None and len(value) <= PACK_LIMIT and 0 <= version < _VERSION_LIMIT:
                append(pack(1 if compressed else 0, version) + value)
                continue
            append(_row(value, compressed, version, expires_at))
            if expires_at is not None:
                heap.append((expires_at, key))
    finally:
        if gc_was_enabled:
            gc.enable()
    heapq.heapify(heap)
    # Snapshot rows arrive in key order: the table is cut into runs in one pass (it checks
    # the order) instead of a million single inserts.
    return SortedTable.from_sorted(keys, packed), heap

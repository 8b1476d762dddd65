"""A sorted map from keys to rows, with no hash table: the memory engine's index.

The memory engine used a ``SortedDict`` (a dict plus a sorted key list): a key then costs a
dict entry (24 bytes, kept at most two thirds full, plus its index slot: about 42 bytes at a
million keys) on top of its sorted-list slot, its key object and its row. This table keeps
only the order: the keys in sorted runs of at most ``2 * load`` and the rows in parallel
runs, with the last key of each run in ``maxes``. A key costs two list slots (about 18 bytes
with the lists' slack) instead of about 51, which is what takes a small key from 163 to about
128 bytes (issue 17, ``python bench/recovery_bench.py``).

The price is the lookup: two C bisections (over ``maxes``, then over one run of at most
``2 * load`` keys) instead of one hash probe, a fraction of a microsecond at a million keys
against the few microseconds a request costs the Store. Inserting shifts one run (a memmove
of at most ``2 * load`` pointers), as ``SortedDict`` did. Keys are bytes, compared as bytes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import chain, islice
from operator import lt
from typing import Generic, TypeVar

Row = TypeVar("Row")

# Runs hold between ``LOAD // 4`` (after deletes; merged below that) and ``2 * LOAD`` keys:
# long enough that ``maxes`` stays short, short enough that an insert's memmove is cheap.
LOAD = 1000


class SortedTable(Generic[Row]):
    """Keys (bytes) to rows, iterated in key order. Not thread-safe; no method suspends."""

    __slots__ = ("_keys", "_len", "_load", "_maxes", "_rows")

    def __init__(self, load: int = LOAD) -> None:
        self._load = load
        self._maxes: list[bytes] = []
        self._keys: list[list[bytes]] = []
        self._rows: list[list[Row]] = []
        self._len = 0

    @classmethod
    def from_sorted(cls, keys: list[bytes], rows: list[Row], load: int = LOAD) -> SortedTable[Row]:
        """A table of ``keys`` (strictly increasing) and their ``rows``, built in one pass:
        recovery loads millions of sorted snapshot rows this way, with no per-key insert."""
        if len(keys) != len(rows):
            raise ValueError("keys and rows differ in length")
        if not all(map(lt, keys, islice(keys, 1, None))):  # C speed: no bytecode per key
            raise ValueError("keys are not strictly increasing")
        table = cls(load)
        for start in range(0, len(keys), load):
            table._keys.append(keys[start:start + load])
            table._rows.append(rows[start:start + load])
            table._maxes.append(table._keys[-1][-1])
        table._len = len(keys)
        return table

    def __len__(self) -> int:
        return self._len

    def get(self, key: bytes) -> Row | None:
        maxes = self._maxes
        run = bisect_left(maxes, key)
        if run == len(maxes):
            return None
        keys = self._keys[run]
        at = bisect_left(keys, key)  # < len(keys): the run's last key is >= key
        return self._rows[run][at] if keys[at] == key else None

    def set(self, key: bytes, row: Row) -> Row | None:
        """Store ``row`` under ``key``; return the row it replaced, or None."""
        maxes = self._maxes
        run = bisect_left(maxes, key)
        if run == len(maxes):
            if not maxes:
                maxes.append(key)
                self._keys.append([key])
                self._rows.append([row])
                self._len = 1
                return None
            run -= 1  # beyond every key: appended to the last run
            self._keys[run].append(key)
            self._rows[run].append(row)
            maxes[run] = key
        else:
            keys = self._keys[run]
            at = bisect_left(keys, key)
            if keys[at] == key:
                rows = self._rows[run]
                old = rows[at]
                rows[at] = row
                return old
            keys.insert(at, key)
            self._rows[run].insert(at, row)
        self._len += 1
        if len(self._keys[run]) > 2 * self._load:
            self._split(run)
        return None

    def pop(self, key: bytes) -> Row | None:
        """Remove ``key``; return its row, or None when it was absent."""
        maxes = self._maxes
        run, at = self._position(key)
        if run == len(maxes) or (keys := self._keys[run])[at] != key:
            return None
        del keys[at]
        old = self._rows[run].pop(at)
        self._len -= 1
        if not keys:
            del maxes[run], self._keys[run], self._rows[run]
        else:
            maxes[run] = keys[-1]
            if len(keys) < self._load // 4 and len(maxes) > 1:
                self._merge(run if run + 1 < len(maxes) else run - 1)
        return old

    def items(self, start: bytes | None = None, end: bytes | None = None
              ) -> Iterator[tuple[bytes, Row]]:
        """``(key, row)`` for ``start <= key < end`` (None: unbounded), in key order. The
        table must not change while the iterator is in use."""
        run, at = (0, 0) if start is None else self._position(start)
        for index in range(run, len(self._maxes)):
            keys = self._keys[index]
            rows = self._rows[index]
            first = at if index == run else 0
            if end is not None and keys[-1] >= end:
                stop = bisect_left(keys, end, first)
                yield from zip(keys[first:stop], rows[first:stop], strict=True)
                return
            yield from zip(keys[first:], rows[first:], strict=True)

    def frozen(self) -> tuple[list[bytes], list[Row]]:
        """Every key and row as two flat lists, copied at C speed: a consistent view that later
        changes to the table do not touch (rows themselves are immutable)."""
        return list(chain.from_iterable(self._keys)), list(chain.from_iterable(self._rows))

    def _position(self, key: bytes) -> tuple[int, int]:
        run = bisect_left(self._maxes, key)
        if run == len(self._maxes):
            return run, 0
        return run, bisect_left(self._keys[run], key)

    def _split(self, run: int) -> None:
        # Both halves are fresh slices, sized exactly: truncating the old list in place would
        # keep its allocation (twice the slots), 16 bytes per key for nothing.
        keys, rows = self._keys[run], self._rows[run]
        half = len(keys) >> 1
        self._keys[run:run + 1] = [keys[:half], keys[half:]]
        self._rows[run:run + 1] = [rows[:half], rows[half:]]
        self._maxes.insert(run, keys[half - 1])

    def _merge(self, run: int) -> None:
        """Join run ``run`` with the next one (split again if the result is too long)."""
        self._keys[run].extend(self._keys.pop(run + 1))
        self._rows[run].extend(self._rows.pop(run + 1))
        del self._maxes[run]
        if len(self._keys[run]) > 2 * self._load:
            self._split(run)


"""Scans: (prefix | start/end, cursor) -> one half-open key range -> a page of live items.

A cursor is the key the next page starts at: the last key returned plus a zero byte, which is
the smallest key greater than it. That makes a cursor stateless (no server-side iterator to
expire or leak), stable under concurrent writes (a page never repeats a key, and a key
inserted behind the cursor is simply not seen, as with etcd's range-by-revision paging), and
valid on any replica. It is documented as opaque so the encoding can change.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.limits import MAX_KEY_BYTES, MAX_SCAN_LIMIT
from shardkv.node.storage.compression import decode_value
from shardkv.node.storage.engines.engine import Engine, StoredItem
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.storage.store_model import Item, ScanPage
from shardkv.node.storage.write_plan import live


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys ``start <= key < end``; None means unbounded on that side."""

    start: bytes | None
    end: bytes | None

    @property
    def empty(self) -> bool:
        return self.start is not None and self.end is not None and self.start >= self.end


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None if there is
    none, i.e. the prefix is all 0xff bytes)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def next_cursor(last_key: bytes) -> bytes:
    return last_key + b"\x00"


def resolve_range(
    *,
    prefix: bytes | None,
    start: bytes | None,
    end: bytes | None,
    cursor: bytes | None,
) -> KeyRange:
    """The range a scan page covers. Raises InvalidArgument for a prefix combined with
    start/end, or a cursor that cannot have come from this store."""
    if prefix is not None and (start is not None or end is not None):
        raise InvalidArgument("scan takes either prefix or start/end, not both")
    if prefix is not None:
        start, end = prefix, prefix_end(prefix)
    if cursor is not None:
        if not cursor or len(cursor) > MAX_KEY_BYTES + 1:
            raise InvalidArgument("scan cursor is not valid")
        start = cursor if start is None else max(start, cursor)
    return KeyRange(start, end)


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCAN_LIMIT:
        raise InvalidArgument(f"limit must be an integer in [1, {MAX_SCAN_LIMIT}], got {limit!r}")
    return limit


def to_item(stored: StoredItem) -> Item:
    """The visible form of a stored item: the value decompressed."""
    return Item(decode_value(stored.value, stored.compressed), stored.version, stored.expires_at)


async def scan_page(engine: Engine, key_range: KeyRange, limit: int, now: float) -> ScanPage:
    """Up to ``limit`` live items of ``key_range``. Expired items the sweeper has not deleted
    yet are skipped, and the engine is asked again for as many as were skipped, so a page is
    only short when the range is exhausted (then the cursor is None)."""
    if key_range.empty:
        return ScanPage([], None)
    low = key_range.start
    items: list[tuple[bytes, Item]] = []
    while len(items) < limit:
        want = limit - len(items)
        rows = await engine.scan(low, key_range.end, want)
        # Session records (the node's reserved keys) are state, not data: never listed.
        items.extend((key, to_item(stored)) for key, stored in rows
                     if live(stored, now) and not is_reserved(key))
        if len(rows) < want:
            return ScanPage(items, None)
        low = next_cursor(rows[-1][0])
    return ScanPage(items, next_cursor(items[-1][0]))

"""Which keys a watch sees, and how a WAL entry becomes watch events.

A watch names one key, a prefix, or a range ``[start, end)`` (``end`` absent: to the end of
the key space). Reserved keys (the node's own rows under ``\\x00shardkv:``, such as the
exactly-once session records) match no filter: they are bookkeeping, not data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.limits import as_key
from shardkv.node.storage.compression import decode_value
from shardkv.node.storage.sessions import is_reserved
from shardkv.node.wal.record import MutationKind, WalEntry


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """The key range ``[start, end)`` a watch covers (``end`` None: unbounded)."""

    start: bytes
    end: bytes | None

    @classmethod
    def parse(cls, *, key: object = None, prefix: object = None, start: object = None,
              end: object = None) -> WatchFilter:
        """Exactly one of key, prefix, or start (with an optional end). INVALID_ARGUMENT
        otherwise, or for an empty range, or for a reserved key."""
        given = sum(x is not None for x in (key, prefix, start))
        if given != 1 or (end is not None and start is None):
            raise InvalidArgument("a watch takes exactly one of key, prefix, or start[/end]")
        if key is not None:
            raw = _user_key(key, "key")
            return cls(raw, raw + b"\x00")
        if prefix is not None:
            raw = b"" if prefix in ("", b"") else _user_key(prefix, "prefix")
            return cls(raw, _prefix_end(raw))
        low = _user_key(start, "start")
        high = None if end is None else _user_key(end, "end")
        if high is not None and high <= low:
            raise InvalidArgument("watch range is empty: end must be greater than start")
        return cls(low, high)

    def matches(self, key: bytes) -> bool:
        if key < self.start or (self.end is not None and key >= self.end):
            return False
        return not is_reserved(key)


def _user_key(value: object, what: str) -> bytes:
    try:
        raw = as_key(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"watch {what}: {exc.message}") from None
    if is_reserved(raw):
        raise InvalidArgument(f"watch {what} names reserved keys (\\x00shardkv:)")
    return raw


def _prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key with ``prefix`` (None: no such key)."""
    raw = bytearray(prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return None
    raw[-1] += 1
    return bytes(raw)


def entry_events(entry: WalEntry, watch: WatchFilter, shard: str, *,
                 values: bool) -> list[dict[str, Any]]:
    """The events one entry gives a watch: one per matching mutation, all with the entry's
    LSN as ``version``, and the ``prev_version`` the primary logged with the mutation (so
    history and live events agree; None: the key was absent or expired, or the record
    predates the field)."""
    events: list[dict[str, Any]] = []
    lsn = entry.lsn
    for m in entry.mutations:
        if not watch.matches(m.key):
            continue
        prev = m.prev_version
        if prev == 0:  # replaced an earlier mutation of this same entry (record.py)
            prev = lsn
        if m.kind is MutationKind.PUT:
            event: dict[str, Any] = {"type": "put", "key": m.key, "version": lsn,
                                     "prev_version": prev, "shard": shard}
            if values:
                event["value"] = decode_value(m.value, m.compressed)
            if m.expires_at is not None:
                event["expires_at"] = m.expires_at
        else:
            event = {"type": "expire" if m.expired else "delete", "key": m.key,
                     "version": lsn, "prev_version": prev, "shard": shard}
        events.append(event)
    return events


def events_size(events: list[dict[str, Any]]) -> int:
    """Roughly the bytes ``events`` take in a buffer or a frame (what the bounds count)."""
    return sum(len(e["key"]) + len(e.get("value", b"")) + 48 for e in events)

"""Values are bytes; these are the few encodings people actually store, and the result types.

The store never interprets a value (except ``incr``, which keeps ASCII decimal), so an
encoding is a client-side agreement. Keeping the helpers explicit (``values.json(obj)`` to
store, ``item.json()`` to read) avoids a client that silently guesses and round-trips a
``str`` into ``bytes`` one day and into JSON the next.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any

import msgpack as _msgpack


def text(value: str) -> bytes:
    """UTF-8 text as a value."""
    return value.encode("utf-8")


def json(obj: Any) -> bytes:
    """A JSON document as a value (compact separators, UTF-8)."""
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def msgpack(obj: Any) -> bytes:
    """A msgpack document as a value (bytes stay bytes)."""
    packed: bytes = _msgpack.packb(obj, use_bin_type=True)
    return packed


def decode_text(raw: bytes) -> str:
    return raw.decode("utf-8")


def decode_json(raw: bytes) -> Any:
    return _json.loads(raw)


def decode_msgpack(raw: bytes) -> Any:
    return _msgpack.unpackb(raw, raw=False, strict_map_key=False)


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value with its version (the shard LSN that wrote it) and its expiry
    (a Unix timestamp in seconds, None when it never expires)."""

    value: bytes
    version: int
    expires_at: float | None = None

    def text(self) -> str:
        return decode_text(self.value)

    def json(self) -> Any:
        return decode_json(self.value)

    def msgpack(self) -> Any:
        return decode_msgpack(self.value)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Item:
        return cls(bytes(body["value"]), int(body["version"]), body.get("expires_at"))


@dataclass(frozen=True, slots=True)
class KeyItem:
    """One result of a scan: the key (``str`` or ``bytes``, as the scan was asked; see
    ``scan_merge``) alongside the item."""

    key: bytes | str
    value: bytes
    version: int

    def text(self) -> str:
        return decode_text(self.value)

    def json(self) -> Any:
        return decode_json(self.value)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The answer to a delete. Truthy when a key was actually removed, so
    ``if await kv.delete(k):`` reads naturally; ``version`` orders it among the shard's
    writes (deletes are writes)."""

    deleted: bool
    version: int | None

    def __bool__(self) -> bool:
        return self.deleted

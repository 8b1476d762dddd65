"""One spec per operation of the public surface: the single table both sides read.

Before this table the facts about an op were spread out: the node found the keys a request
names by argument *name* (so a new key-carrying argument silently skipped the ``STALE_MAP``
ownership check), and the client assumed every op idempotent unless told otherwise (so a new
write forgotten there was retried into a double apply). Here each op says once:

- its arguments, each with a kind (``ArgKind``) that says whether it carries keys and how;
- whether it writes, and whether it is idempotent. **A write is non-idempotent unless its
  spec says otherwise**: retrying it after it may have been applied is only safe because
  the client stamps every write with a session (``client_id``/``seq``) that the shard
  deduplicates (docs/exactly-once.md).

The node (``node/api/operations.py``) takes the accepted argument names, the write flag and
the key extraction from here; the client (``client/executor.py``) takes the routing keys and
the retry decision from here. ``tests/unit/test_ops_spec.py`` checks that both sides and
docs/protocol.md cover exactly these ops.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ArgKind(enum.Enum):
    """What an argument holds. The first three carry keys; the rest do not."""

    KEY = "key"  # one key
    KEYS = "keys"  # a list of keys
    ITEMS = "items"  # a list of [key, value] pairs
    OPS = "ops"  # a list of batch ops, each a map with a "key"
    VALUE = "value"  # bytes
    BYTES = "bytes"  # bytes that are not a key (scan bounds, cursors)
    INT = "int"
    VERSION = "version"  # a non-negative integer version (LSN)
    BOOL = "bool"
    SECONDS = "seconds"  # a positive number of seconds (ttl)
    NUMBER = "number"
    CHOICE = "choice"  # one of a few strings

    @property
    def carries_keys(self) -> bool:
        return self in _KEY_KINDS


_KEY_KINDS = frozenset({ArgKind.KEY, ArgKind.KEYS, ArgKind.ITEMS, ArgKind.OPS})


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: ArgKind
    required: bool = False


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One operation: its name, its own arguments, and how it may be retried."""

    name: str
    args: tuple[Arg, ...]
    writes: bool
    idempotent: bool
    # Read options or write options (below) are accepted on top of ``args``.
    routed: bool = True  # False: the op names no key and is sent to one node (ping)
    # The arguments that carry keys, worked out once: the client routes every request by them.
    key_args: tuple[Arg, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_args",
                           tuple(a for a in self.args if a.kind.carries_keys))

    @property
    def arg_names(self) -> frozenset[str]:
        common = WRITE_OPTIONS if self.writes else READ_OPTIONS
        own = {a.name for a in self.args}
        if not self.routed:
            return frozenset(own)
        return frozenset(own | {a.name for a in common})

    def keys_of(self, args: Mapping[str, Any]) -> list[Any]:
        """Every key ``args`` names, in order, as sent (not normalised; an entry of the wrong
        shape is skipped here and refused by the op's own argument checks)."""
        found: list[Any] = []
        for arg in self.key_args:
            raw = args.get(arg.name)
            if raw is None:
                continue
            if arg.kind is ArgKind.KEY:
                found.append(raw)
            elif isinstance(raw, list | tuple):
                found.extend(_listed_keys(arg.kind, raw))
        return found


def _listed_keys(kind: ArgKind, entries: list[Any] | tuple[Any, ...]) -> list[Any]:
    keys: list[Any] = []
    for entry in entries:
        if kind is ArgKind.KEYS:
            key = entry
        elif kind is ArgKind.ITEMS:
            key = entry[0] if isinstance(entry, list | tuple) and entry else None
        else:  # OPS
            key = entry.get("key") if isinstance(entry, Mapping) else None
        if key is not None:
            keys.append(key)
    return keys


# Accepted by every read: consistency level, staleness bound, read-your-writes version.
READ_OPTIONS: tuple[Arg, ...] = (
    Arg("consistency", ArgKind.CHOICE),
    Arg("max_staleness_ms", ArgKind.NUMBER),
    Arg("min_version", ArgKind.VERSION),
    Arg("ring_version", ArgKind.INT),
)
# Accepted by every write: write concern, ring version, and the client session that makes a
# retried write exactly-once (``client_id`` bytes, ``seq`` a positive integer; both or none).
WRITE_OPTIONS: tuple[Arg, ...] = (
    Arg("w", ArgKind.CHOICE),
    Arg("ring_version", ArgKind.INT),
    Arg("client_id", ArgKind.BYTES),
    Arg("seq", ArgKind.INT),
)


def _read(name: str, *args: Arg) -> OpSpec:
    return OpSpec(name, args, writes=False, idempotent=True)


def _write(name: str, *args: Arg, idempotent: bool = False) -> OpSpec:
    return OpSpec(name, args, writes=True, idempotent=idempotent)


_KEY = Arg("key", ArgKind.KEY, required=True)
_TTL = Arg("ttl", ArgKind.SECONDS)
_IF_VERSION = Arg("if_version", ArgKind.VERSION)

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        _read("get", _KEY),
        _read("exists", _KEY),
        _read("ttl", _KEY),
        _read("mget", Arg("keys", ArgKind.KEYS, required=True)),
        _read(
            "scan",
            Arg("prefix", ArgKind.BYTES),
            Arg("start", ArgKind.BYTES),
            Arg("end", ArgKind.BYTES),
            Arg("cursor", ArgKind.BYTES),
            Arg("limit", ArgKind.INT),
        ),
        _write(
            "put",
            _KEY,
            Arg("value", ArgKind.VALUE, required=True),
            _IF_VERSION,
            Arg("if_absent", ArgKind.BOOL),
            _TTL,
        ),
        _write("delete", _KEY, _IF_VERSION),
        _write("incr", _KEY, Arg("delta", ArgKind.INT)),
        _write("expire", _KEY, Arg("ttl", ArgKind.SECONDS, required=True)),
        _write("mput", Arg("items", ArgKind.ITEMS, required=True), _TTL),
        _write("mdelete", Arg("keys", ArgKind.KEYS, required=True)),
        _write("batch", Arg("ops", ArgKind.OPS, required=True)),
        OpSpec("ping", (), writes=False, idempotent=True, routed=False),
    )
}

WRITE_OPS = frozenset(name for name, spec in OPS.items() if spec.writes)


def spec_of(name: str) -> OpSpec:
    """The spec of ``name``; KeyError for an op that does not exist (a programming error on
    the client side; the node answers ``UNKNOWN_OP`` before it gets here)."""
    return OPS[name]

"""What the write-ahead log holds: entries, each one LSN, each carrying one or more mutations.

An entry is the unit of atomicity and of ordering. A single put is an entry with one mutation;
a batch (or mput/mdelete) is one entry with many, so recovery applies all of it or none of it
(the entry is one framed, checksummed record on disk). Every key written by an entry gets the
entry's LSN as its version, like etcd's mod revision for a transaction.

An entry with no mutations is a no-op: a new primary writes one when its epoch starts, so the
log records where each epoch began (replicas use this to find the last shared record).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack


class MutationKind(enum.IntEnum):
    PUT = 1
    DELETE = 2


_KINDS = {int(kind): kind for kind in MutationKind}
# kind -> its plain int for the wire: a dict lookup is a third of ``int(kind)`` on an IntEnum,
# and every logged mutation is encoded (issue 12: a migration's import writes a million).
_WIRE_KINDS = {kind: int(kind) for kind in MutationKind}


@dataclass(frozen=True, slots=True, init=False)
class Mutation:
    """One key's change. ``value`` is stored as encoded by ``shardkv.node.storage.compression``
    (``compressed`` says whether it is zstd); ``expires_at`` is Unix time in seconds.
    ``expired`` marks a delete written by the TTL sweeper (a watch reports it as ``expire``);
    it is on the wire only when set, so every older record reads back unchanged.
    ``prev_version`` is the version this mutation replaced, as the primary saw it when it
    ordered the write (None: the key was absent or expired; 0: an earlier mutation of the
    same entry, whose version is the entry's own LSN). Logged so that a watch replaying the
    log and one following live report the same value (docs/watch.md); on the wire only when
    known, as a seventh element, so records written before it read back as None.

    Frozen, but with its own ``__init__``: one or two are built per write and one per logged
    mutation at recovery, and a frozen dataclass's generated ``__init__`` goes through
    ``object.__setattr__`` per field; setting the slots directly costs about 40 % less."""

    kind: MutationKind
    key: bytes
    value: bytes = b""
    compressed: bool = False
    expires_at: float | None = None
    expired: bool = False
    prev_version: int | None = None

    def __init__(self, kind: MutationKind, key: bytes, value: bytes = b"",
                 compressed: bool = False, expires_at: float | None = None,
                 expired: bool = False, prev_version: int | None = None) -> None:
        _set_kind(self, kind)
        _set_key(self, key)
        _set_value(self, value)
        _set_compressed(self, compressed)
        _set_expires_at(self, expires_at)
        _set_expired(self, expired)
        _set_prev_version(self, prev_version)

    def to_wire(self) -> list[Any]:
        wire = [_WIRE_KINDS[self.kind], self.key, self.value, self.compressed, self.expires_at]
        if self.prev_version is not None:
            wire.append(self.expired)
            wire.append(self.prev_version)
        elif self.expired:
            wire.append(True)
        return wire

    @classmethod
    def from_wire(cls, raw: list[Any]) -> Mutation:
        # Recovery decodes every logged mutation through here, so the common shapes are
        # taken without a starred unpack or an enum call (issue 17: replay time).
        n = len(raw)
        if n == 7:
            kind, key, value, compressed, expires_at, expired, prev = raw
            expired = bool(expired)
            prev = prev if type(prev) is int else None
        elif n == 5:
            kind, key, value, compressed, expires_at = raw
            expired, prev = False, None
        else:
            kind, key, value, compressed, expires_at, *rest = raw
            expired = bool(rest and rest[0])
            prev = rest[1] if len(rest) > 1 and type(rest[1]) is int else None
        return cls(_KINDS.get(kind) or MutationKind(kind), bytes(key), bytes(value),
                   compressed if compressed is False or compressed is True else bool(compressed),
                   expires_at, expired, prev)

    def replacing(self, prev_version: int | None) -> Mutation:
        """This mutation, recording the version it replaces."""
        return Mutation(self.kind, self.key, self.value, self.compressed, self.expires_at,
                        self.expired, prev_version)


# The slots' own setters (they bypass the frozen class's __setattr__, which refuses).
(_set_kind, _set_key, _set_value, _set_compressed, _set_expires_at, _set_expired,
 _set_prev_version) = (
    getattr(Mutation, name).__set__
    for name in ("kind", "key", "value", "compressed", "expires_at", "expired",
                 "prev_version"))


@dataclass(frozen=True, slots=True)
class WalEntry:
    """One log record: its LSN (the version it gives every key it writes), the epoch of the
    primary that wrote it, the primary's wall clock at write time (seconds), and its
    mutations (empty for a no-op)."""

    lsn: int
    epoch: int
    mutations: tuple[Mutation, ...] = field(default_factory=tuple)
    ts: float = 0.0
    # The msgpack of ``to_wire()``, once someone has encoded it (``payload_of``): the WAL's
    # record payload and each replica's copy of the entry on the stream are these same
    # bytes, encoded once per entry instead of once per consumer. Not part of the value.
    payload: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def __init__(self, lsn: int, epoch: int, mutations: tuple[Mutation, ...] = (),
                 ts: float = 0.0) -> None:
        # Its own, as ``Mutation`` has: a replica builds one per entry of every frame and
        # recovery one per logged entry, and the generated frozen ``__init__`` goes through
        # ``object.__setattr__`` per field (issue 17: 0.8 -> 0.4 us per entry).
        _set_lsn(self, lsn)
        _set_epoch(self, epoch)
        _set_mutations(self, mutations)
        _set_ts(self, ts)
        _set_payload(self, None)

    def to_wire(self) -> list[Any]:
        """The msgpack-able form used in WAL payloads and on the replication stream."""
        kinds = _WIRE_KINDS
        return [self.lsn, self.epoch, self.ts, [
            m.to_wire() if m.expired or m.prev_version is not None
            else [kinds[m.kind], m.key, m.value, m.compressed, m.expires_at]
            for m in self.mutations]]

    @classmethod
    def from_wire(cls, raw: list[Any]) -> WalEntry:
        lsn, epoch, ts, mutations = raw
        decode = Mutation.from_wire
        return cls(int(lsn), int(epoch), tuple([decode(m) for m in mutations]), ts)


_set_lsn, _set_epoch, _set_mutations, _set_ts, _set_payload = (
    getattr(WalEntry, name).__set__ for name in ("lsn", "epoch", "mutations", "ts", "payload"))


def payload_of(entry: WalEntry) -> bytes:
    """``msgpack(entry.to_wire())``, encoded at most once per entry (issue 17: the WAL and
    every replication stream used to encode the same entry each)."""
    payload = entry.payload
    if payload is None:
        payload = msgpack.packb(entry.to_wire(), use_bin_type=True)
        object.__setattr__(entry, "payload", payload)  # a cache on a frozen value
    return payload

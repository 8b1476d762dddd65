"""Client sessions: the shard's dedup table that makes a retried write exactly-once.

A client stamps every write with a session: ``client_id`` (bytes it picked at random) and
``seq`` (a number that grows with each write of that id; one write at a time per id). The
shard keeps, per client id, the last ``seq`` it decided and that decision's outcome (the
answer, or the definite error). A write whose ``seq`` equals the record's is a retry: it is
answered from the record and not applied again. One below is a late duplicate of a write the
client has already moved past: refused, never applied. One above is new.

The table is *replicated state*, not a side structure: a session record is an ordinary row
under a reserved key (``RESERVED_PREFIX``, which no request may name), written by a PUT
mutation in the same WAL entry as the write it describes. So it is atomic with the write (an
entry is applied whole or not at all), shipped to replicas with it (a new primary after a
failover answers a retry from it), in every snapshot, and kept by both engines without any
engine code. A record carries the primary's clock when it was written: one older than the
session TTL counts as absent. ``SessionIndex`` keeps the rows bounded in number and age: the
entries the primary logs also delete the least recently written sessions once there are too
many, and expired ones. (The rows have no ``expires_at``: a TTL would push every write into
the engine's expiry index, whose upkeep is proportional to the whole key space.)

Every *decided* write of a stamped request logs its record, failures included (a failed
compare-and-swap, a delete of an absent key): otherwise a late duplicate of it could still
apply after the client was told it did not. See docs/exactly-once.md.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
from shardkv.cluster.errors import InvalidArgument, ShardKVError, error_from_dict
from shardkv.node.storage.engines.engine import StoredItem
from shardkv.node.wal.record import Mutation, MutationKind

# Keys the node keeps for itself. No request may name one (INVALID_ARGUMENT) and scans skip
# them; a user key starting with a NUL byte followed by "shardkv:" is the price.
RESERVED_PREFIX = b"\x00shardkv:"
SESSION_PREFIX = RESERVED_PREFIX + b"session:"
SESSION_RANGE_END = RESERVED_PREFIX + b"session;"  # ";" follows ":" in ASCII
MAX_CLIENT_ID_BYTES = 64
MAX_SEQ = 2**63 - 1

DEFAULT_SESSION_TTL_S = 600.0
DEFAULT_MAX_SESSIONS = 100_000
# How many old sessions one write may delete (bounded work per write), and how often the
# front of the index is checked for expired sessions (seconds of the primary's clock).
_MAX_EVICTIONS_PER_WRITE = 8
_EXPIRY_CHECK_S = 1.0
_PACKER = msgpack.Packer(use_bin_type=True)
_PUT = MutationKind.PUT


class Session(NamedTuple):
    """A write's session stamp. A NamedTuple: one is built per write on the hot path."""

    client_id: bytes
    seq: int

    @property
    def key(self) -> bytes:
        return SESSION_PREFIX + self.client_id


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decided write answered: ``payload`` (the part of the answer that is not the
    version; the version is the LSN of the entry that logged the record) or ``error``."""

    payload: Any = None
    error: ShardKVError | None = None


DONE = Outcome()  # a write whose answer is its version alone (every put's)
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class SessionRecord:
    seq: int
    outcome: Outcome
    lsn: int  # the entry that logged it: the version of a successful write
    written_at: float  # the primary's clock when it was logged


def parse_session(client_id: object, seq: object) -> Session:
    """Check a request's ``client_id``/``seq`` (both or none)."""
    # The shape every client library sends, checked first: this runs for every stamped write.
    # (``tuple.__new__``: half the cost of the NamedTuple's own ``__new__``, a Python function.)
    if type(client_id) is bytes and type(seq) is int and client_id \
            and len(client_id) <= MAX_CLIENT_ID_BYTES and 1 <= seq <= MAX_SEQ:
        return _new_tuple(Session, (client_id, seq))
    if isinstance(client_id, str):
        client_id = client_id.encode("utf-8")
    if not isinstance(client_id, bytes | bytearray) or not client_id:
        raise InvalidArgument("client_id must be non-empty bytes when seq is given")
    if len(client_id) > MAX_CLIENT_ID_BYTES:
        raise InvalidArgument(f"client_id is {len(client_id)} bytes; the limit is "
                              f"{MAX_CLIENT_ID_BYTES}")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise InvalidArgument(f"seq must be an integer in [1, 2**63), got {seq!r}")
    return Session(bytes(client_id), seq)


def check_user_key(key: bytes) -> None:
    """Refuse a key in the node's reserved namespace (where session records live)."""
    if key[:1] == b"\x00" and key.startswith(RESERVED_PREFIX):
        raise InvalidArgument("keys starting with \\x00shardkv: are reserved for the node",
                              key=key)


def is_reserved(key: bytes) -> bool:
    return key[:1] == b"\x00" and key.startswith(RESERVED_PREFIX)


def encode_record(seq: int, outcome: Outcome, written_at: float) -> bytes:
    if outcome.error is None:
        return _PACKER.pack([seq, written_at, outcome.payload, None])
    return _PACKER.pack([seq, written_at, outcome.payload, outcome.error.to_dict()])


def decode_record(item: StoredItem) -> SessionRecord:
    seq, written_at, payload, error = msgpack.unpackb(item.value, raw=False)
    outcome = Outcome(payload, None if error is None else error_from_dict(error))
    return SessionRecord(int(seq), outcome, item.version, float(written_at))


def seq_and_time_of(value: bytes) -> tuple[int, float]:
    """``(seq, written_at)`` of an encoded record (all that rebuilding the index needs)."""
    raw = msgpack.unpackb(value, raw=False)
    return int(raw[0]), float(raw[1])


def session_puts(mutations: Sequence[Mutation]) -> list[bytes]:
    """The session rows ``mutations`` write (their keys)."""
    return [m.key for m in mutations
            if m.kind is _PUT and m.key[:1] == b"\x00" and m.key.startswith(SESSION_PREFIX)]


def drop_older_records(mutations: Sequence[Mutation], held: dict[bytes, StoredItem | None]
                       ) -> list[Mutation]:
    """``mutations`` without the session records whose ``seq`` is not above the one this
    shard already holds for that client (``held``: session key -> its row, or None).

    Imported records (an online migration moves a source's session rows with its keys)
    must never lower a client's ``seq`` on the target: a client's id is shared by its writes
    to every shard, so the target's own record is often newer than the source's, and a
    lowered one would take a retry (or a late duplicate) of a write the target already
    applied for new, and apply it again."""
    kept = []
    for m in mutations:
        row = held.get(m.key) if m.kind is _PUT else None
        if row is not None and seq_and_time_of(m.value)[0] <= seq_and_time_of(row.value)[0]:
            continue
        kept.append(m)
    return kept


def check_order(session: Session, record: SessionRecord | None) -> SessionRecord | None:
    """The record to answer ``session`` from (a retry), None if it is a new write, or
    INVALID_ARGUMENT for a late duplicate of a write the client has since moved past."""
    if record is None or session.seq > record.seq:
        return None
    if session.seq == record.seq:
        return record
    raise InvalidArgument(
        f"seq {session.seq} is older than this session's last write {record.seq}: a late "
        "duplicate, not applied", last_seq=record.seq)


class SessionIndex:
    """The primary's cache of the session rows: per session its last ``seq`` and write
    time, least recently written first.

    Two uses. It keeps the rows bounded: the entry a stamped write logs also deletes, from
    the front, sessions older than ``ttl_s`` and, when it creates a session past
    ``max_sessions``, the oldest ones (evictions are logged, so every replica agrees). And it
    makes the common case cheap: a ``seq`` above the cached one is a new write, decided
    without reading the row (and, for a blind put, without the store lock). Only a retry
    reads its row.

    It is a cache of replicated state, so it must never be behind the rows when it is used:
    anything that changes rows other than this primary's own stamps (a replicated entry, a
    snapshot installed, a log suffix dropped) marks it ``stale``, and the Store rebuilds it
    from the rows before the next stamped write (and at ``open``/``begin_epoch``)."""

    def __init__(self, *, ttl_s: float, max_sessions: int) -> None:
        if ttl_s <= 0:
            raise ValueError("session ttl must be positive")
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        # session key -> (written_at, seq), least recently written first
        self._rows: collections.OrderedDict[bytes, tuple[float, int]] = (
            collections.OrderedDict())
        self.stale = True
        self.evicted = 0  # live sessions pushed out by the bound (their retries not deduped)
        self._next_expiry_check = 0.0

    def __len__(self) -> int:
        return len(self._rows)

    def reset(self, rows: list[tuple[bytes, int, float]]) -> None:
        """Rebuild from (session key, seq, written_at) rows."""
        ordered = sorted(rows, key=lambda row: (row[2], row[0]))
        self._rows = collections.OrderedDict((key, (at, seq)) for key, seq, at in ordered)
        self.stale = False

    def is_new(self, session: Session, now: float) -> bool:
        """True if ``session`` is surely a write this shard has not decided (no row, an
        expired one, or a lower seq); False if its row must be read. Never True when
        stale."""
        if self.stale:
            return False
        cached = self._rows.get(session.key)
        return cached is None or cached[0] + self.ttl_s <= now or session.seq > cached[1]

    def expired(self, record: SessionRecord, now: float) -> bool:
        return record.written_at + self.ttl_s <= now

    def stamp(self, session: Session, outcome: Outcome, now: float) -> list[Mutation]:
        """The mutations that log ``outcome`` for ``session``: its record, plus deletes of
        the sessions it pushes out (over the count bound, or expired: the front is looked
        at once a second, or at every write while there is a backlog)."""
        key = SESSION_PREFIX + session.client_id
        mutations: list[Mutation] = []
        self._log(mutations, key, session.seq, outcome, now,
                  self._rows.pop(key, None) is not None)
        return mutations

    def stamp_if_new(self, mutations: list[Mutation], session: Session, now: float) -> bool:
        """``is_new`` then ``stamp`` with ``DONE``, in one step, for a blind write: the
        session key is built and looked up once (every stamped put comes here). If the write
        is new, its record (and evictions) are appended to ``mutations`` and True returned;
        otherwise False, ``mutations`` untouched, and the row must be read."""
        if self.stale:
            return False
        key = SESSION_PREFIX + session.client_id
        rows = self._rows
        cached = rows.get(key)
        if cached is not None:
            if cached[0] + self.ttl_s > now and session.seq <= cached[1]:
                return False
            del rows[key]
        self._log(mutations, key, session.seq, DONE, now, cached is not None)
        return True

    def _log(self, mutations: list[Mutation], key: bytes, seq: int, outcome: Outcome,
             now: float, known: bool) -> None:
        """Append the record of ``key`` (already out of the index: it goes back in last,
        as the most recently written) and the evictions it brings."""
        mutations.append(Mutation(_PUT, key, encode_record(seq, outcome, now)))
        rows = self._rows
        if (not known and len(rows) >= self.max_sessions) or now >= self._next_expiry_check:
            self._evict(mutations, known, now)
        rows[key] = (now, seq)

    def _evict(self, mutations: list[Mutation], known: bool, now: float) -> None:
        rows = self._rows
        oldest_allowed = now - self.ttl_s
        for _ in range(_MAX_EVICTIONS_PER_WRITE):
            if not rows:
                break
            oldest = next(iter(rows))
            written_at = rows[oldest][0]
            over = not known and len(rows) >= self.max_sessions
            if not over and written_at > oldest_allowed:
                self._next_expiry_check = now + _EXPIRY_CHECK_S
                return
            del rows[oldest]
            if written_at > oldest_allowed:
                self.evicted += 1
            mutations.append(Mutation(MutationKind.DELETE, oldest))
        # Stopped at the per-write limit (or emptied the index): look again next write.
        self._next_expiry_check = now if rows else now + _EXPIRY_CHECK_S

"""The ``/v1/replicate`` stream: its messages, and where a replica's log resumes.

One WebSocket per replica, opened by the replica to its primary, binary msgpack frames, each
a map with a type ``t``:

replica -> primary
    ``hello``  ``{node, epoch, last_lsn, last_epoch, want_snapshot, version}``: who I am, the
               epoch I believe in, my log's last entry (LSN and the epoch it was written
               in), and my protocol version (``cluster/replication_hello.py``).
    ``ack``    ``{lsn, lq?}``: everything up to ``lsn`` is durable in my WAL (and applied);
               with ``lq`` it also grants the primary a lease for the frame sent at ``lq``
               (``majority_lease.py``). Sent for heartbeats that carry ``lq`` too.

primary -> replica
    ``welcome``   ``{epoch, start_lsn, primary_lsn, version}``: the logs match; entries from
                  ``start_lsn`` follow, in protocol ``version`` (N and N-1 interoperate).
    ``truncate``  ``{lsn, epoch}``: your log diverges from mine after ``lsn``; drop the rest
                  and say hello again.
    ``snapshot``  ``{lsn, epoch, size}`` then ``chunk`` ``{data}`` frames and ``snapshot_end``:
                  you are behind my oldest retained entry (or cannot roll back); install this
                  snapshot, then entries from ``lsn + 1`` follow.
    ``entries``   ``{entries: [WalEntry wire forms], primary_lsn, commit_lsn, ts, lq}``, in LSN
                  order, no gaps. ``lq``: the primary's monotonic send time, asking for a
                  lease grant. ``commit_lsn`` (the majority LSN when sent; absent from older
                  primaries): how far a replica may serve watches (node/watch/). ``ring``
                  (the ring version the primary knows; absent when it knows none or is
                  older): a replica's watch frames say at least that ring, so a client
                  judges a migration's entries with a map that knows the flip.
    ``heartbeat`` ``{primary_lsn, commit_lsn, ts, lq, ring}``: sent when idle, so a replica can tell
                  an idle shard (fresh) from a dead stream (stale), and renews the grants.
                  ``release`` (true): this primary is fenced and holds no lease; the
                  replica's promise to its epoch is void.
    ``error``     ``{error, message, ...}`` (the error body of ``cluster/errors.py``), then
                  the primary closes: ``STALE_EPOCH`` when one side's epoch is older.

Where a replica resumes is decided by the primary from its own log (``resume_point``), with
the property that makes WAL shipping safe (Raft's log matching): an entry is written by the
single primary of its epoch, so two logs holding an entry with the same (LSN, epoch) hold the
same entries up to it. A replica whose last entry the primary also holds resumes after it;
otherwise it truncates to a point strictly below its last entry and asks again, so the
exchange ends, at worst at the primary's oldest retained entry, below which it takes a
snapshot.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from shardkv.cluster import internal_routes, wire
from shardkv.cluster.errors import InvalidArgument

# The hello and the version rule are shared contracts (cluster/); re-exported for the stream.
from shardkv.cluster.replication_hello import HELLO
from shardkv.cluster.replication_hello import PROTOCOL_VERSION as PROTOCOL_VERSION
from shardkv.cluster.replication_hello import Hello as Hello
from shardkv.cluster.replication_hello import need_int as need_int
from shardkv.cluster.replication_hello import negotiate as negotiate
from shardkv.cluster.replication_hello import version_of as version_of
from shardkv.node.wal.record import WalEntry, payload_of

PATH = internal_routes.REPLICATE

MAX_FRAME_BYTES = 32 << 20
MAX_ENTRIES_PER_FRAME = 512
MAX_BYTES_PER_FRAME = 4 << 20

ACK = "ack"
WELCOME = "welcome"
TRUNCATE = "truncate"
SNAPSHOT = "snapshot"
CHUNK = "chunk"
SNAPSHOT_END = "snapshot_end"
ENTRIES = "entries"
HEARTBEAT = "heartbeat"
ERROR = "error"

MESSAGE_TYPES = frozenset(
    {HELLO, ACK, WELCOME, TRUNCATE, SNAPSHOT, CHUNK, SNAPSHOT_END, ENTRIES, HEARTBEAT, ERROR}
)


def encode(kind: str, **fields: Any) -> bytes:
    fields["t"] = kind
    return wire.pack(fields)


def decode(frame: bytes) -> dict[str, Any]:
    """A frame -> its message map; ``InvalidArgument`` for anything that is not one."""
    try:
        message = wire.unpack(frame, max_bytes=MAX_FRAME_BYTES)
    except ValueError as exc:
        raise InvalidArgument(f"undecodable replication frame: {exc}") from None
    if not isinstance(message, dict) or message.get("t") not in MESSAGE_TYPES:
        raise InvalidArgument("a replication frame must be a map with a known type 't'")
    return message


_ENTRIES_KEY = wire.pack("entries")
_PACKER = msgpack.Packer(use_bin_type=True)


def encode_entries(entries: list[WalEntry], primary_lsn: int, ts: float,
                   lq: float | None = None, commit_lsn: int | None = None,
                   ring: int | None = None, *, legacy: bool = False) -> bytes:
    """The same frame as ``encode(ENTRIES, entries=[e.to_wire() ...], ...)``, built around
    each entry's already encoded payload (``payload_of``; ``encode_payloads``)."""
    return encode_payloads([payload_of(e) for e in entries], primary_lsn, ts, lq, commit_lsn,
                           ring, legacy=legacy)


def encode_payloads(payloads: Sequence[bytes], primary_lsn: int, ts: float,
                    lq: float | None = None, commit_lsn: int | None = None,
                    ring: int | None = None, *, legacy: bool = False) -> bytes:
    """An ENTRIES frame around entries' encoded payloads (the WAL encoded them; the primary's
    tail keeps them), instead of encoding every entry again for every replica: the map's
    other fields are packed, its size bumped by one, and ``"entries"`` appended with the
    payloads spliced in. ``legacy``: for a version-1 replica (``_legacy_payload``)."""
    fields: dict[str, Any] = {"primary_lsn": primary_lsn, "ts": ts, "t": ENTRIES}
    if commit_lsn is not None:
        fields["commit_lsn"] = commit_lsn
    if lq is not None:
        fields["lq"] = lq
    if ring is not None:
        fields["ring"] = ring
    head = wire.pack(fields)  # a fixmap: 0x80 | len(fields), fewer than 15 fields
    return b"".join((bytes((head[0] + 1,)), head[1:], _ENTRIES_KEY,
                     _PACKER.pack_array_header(len(payloads)),
                     *([_legacy_payload(p) for p in payloads] if legacy else payloads)))


def _legacy_payload(payload: bytes) -> bytes:
    """An entry as a version-1 replica decodes it: each mutation's first five fields only
    (a v1 node unpacks exactly five; the ``expired`` flag and ``prev_version`` that later
    releases append only feed watches). Encoded per send: a v1 replica exists only while a
    rolling upgrade is under way."""
    lsn, epoch, ts, mutations = msgpack.unpackb(payload, raw=False)
    return _PACKER.pack([lsn, epoch, ts, [m[:5] for m in mutations]])


def lease_query(message: dict[str, Any]) -> float | None:
    """The primary's send time ``lq`` a frame asks a lease grant for (None: not asked)."""
    lq = message.get("lq")
    if isinstance(lq, int | float) and not isinstance(lq, bool):
        return float(lq)
    return None


# Where ``decode_stream`` leaves an ENTRIES frame's encoded entries in the message: a key no
# decoded frame can hold (msgpack gives strings, numbers, bytes), so none can forge it.
class _PayloadsKey:
    def __repr__(self) -> str:
        return "PAYLOADS"


PAYLOADS: Any = _PayloadsKey()


def decode_stream(frame: bytes) -> dict[str, Any]:
    """``decode``, for a replica reading its primary: an ENTRIES frame's message also keeps
    each entry's encoded bytes (under ``PAYLOADS``), cut from the frame as it is decoded.

    The primary splices the payloads its WAL encoded into the frame (``encode_payloads``);
    kept, they become the replica's own WAL payloads (``decode_entries``), and the replica no
    longer encodes every entry again to log it (issue 17)."""
    if len(frame) > MAX_FRAME_BYTES:
        raise InvalidArgument(f"replication frame of {len(frame)} bytes")
    if type(frame) is not bytes:
        frame = bytes(frame)  # the payloads cut from it are logged as they are
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                max_buffer_size=max(1, len(frame)), max_ext_len=0)
    try:
        unpacker.feed(frame)
        message: dict[Any, Any] = {}
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "entries" and frame[unpacker.tell()] in _ARRAY_MARKERS:
                items, payloads = [], []
                count = unpacker.read_array_header()
                start = unpacker.tell()
                for _ in range(count):
                    items.append(unpacker.unpack())
                    end = unpacker.tell()
                    payloads.append(frame[start:end])
                    start = end
                message[key] = items
                message[PAYLOADS] = payloads
            else:
                message[key] = unpacker.unpack()
        if unpacker.tell() != len(frame):
            raise ValueError("data after the message")
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise InvalidArgument(f"undecodable replication frame: {exc}") from None
    if message.get("t") not in MESSAGE_TYPES:
        raise InvalidArgument("a replication frame must be a map with a known type 't'")
    return message


_ARRAY_MARKERS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])  # fixarray, array 16, array 32


def decode_entries(message: dict[str, Any]) -> list[WalEntry]:
    """The entries of an ENTRIES message, checked for order. With the payloads
    ``decode_stream`` kept, each entry carries its own as received (``payload_of`` then
    returns it: the WAL logs those bytes), when they are in the form the WAL reads back: a
    4-element array whose LSN and epoch are plain integers, as every primary encodes them;
    otherwise the entry is encoded again, as before."""
    raw = message.get("entries")
    if not isinstance(raw, list):
        raise InvalidArgument("entries.entries must be a list")
    try:
        entries = [WalEntry.from_wire(item) for item in raw]
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad entry on the replication stream: {exc}") from None
    for before, after in itertools.pairwise(entries):
        if after.lsn != before.lsn + 1 or after.epoch < before.epoch:
            raise InvalidArgument(f"entries out of order: {before.lsn} then {after.lsn}")
    payloads = message.get(PAYLOADS)
    if type(payloads) is list and len(payloads) == len(entries):
        for entry, item, payload in zip(entries, raw, payloads, strict=True):
            if payload[:1] == b"\x94" and type(item[0]) is int and type(item[1]) is int:
                object.__setattr__(entry, "payload", payload)  # a cache on a frozen value
    return entries


class ResumeKind(enum.StrEnum):
    STREAM = "stream"  # entries from ``lsn`` follow
    TRUNCATE = "truncate"  # the replica keeps up to ``lsn`` and asks again
    SNAPSHOT = "snapshot"  # the replica needs a snapshot


@dataclass(frozen=True, slots=True)
class Resume:
    kind: ResumeKind
    lsn: int


EntryAt = Callable[[int], "WalEntry | None"]


def resume_point(
    entry_at: EntryAt, first_lsn: int, last_lsn: int, replica_lsn: int, replica_epoch: int
) -> Resume:
    """Where a replica whose log ends at (``replica_lsn``, ``replica_epoch``) continues.

    ``entry_at(lsn)`` reads the primary's entry at ``lsn`` (None beyond its end); ``first_lsn``
    and ``last_lsn`` bound the primary's retained log (``first_lsn`` 0: empty log). Blocking
    (reads the log): run it in a thread. Pure otherwise: the tests drive it with lists.
    """
    base = first_lsn - 1 if first_lsn else last_lsn  # entries <= base are not in the log
    if replica_lsn == 0:
        if base > 0:
            return Resume(ResumeKind.SNAPSHOT, 0)
        return Resume(ResumeKind.STREAM, 1)
    if replica_lsn <= base:
        # The replica's last entry was compacted here: it cannot be compared, so the logs
        # cannot be proven to match. A snapshot is the safe way on.
        return Resume(ResumeKind.SNAPSHOT, 0)
    if replica_lsn <= last_lsn:
        mine = entry_at(replica_lsn)
        if mine is not None and mine.epoch == replica_epoch:
            return Resume(ResumeKind.STREAM, replica_lsn + 1)
    # Diverged (or the replica is ahead: it holds entries no majority acknowledged). Keep at
    # most what precedes the first entry of a newer epoch than the replica's last one, and
    # always strictly less than the replica has, so each round makes progress.
    keep = min(replica_lsn - 1, last_lsn, _first_after_epoch(entry_at, base + 1, last_lsn,
                                                             replica_epoch) - 1)
    if 0 < keep <= base:  # the kept entry could not be compared next round either
        return Resume(ResumeKind.SNAPSHOT, 0)
    return Resume(ResumeKind.TRUNCATE, keep)


def _first_after_epoch(entry_at: EntryAt, low: int, high: int, epoch: int) -> int:
    """The smallest LSN in [low, high] whose entry's epoch is above ``epoch`` (high + 1 if
    none). Epochs never decrease along a log, so this is a binary search."""
    lo, hi = low, high + 1
    while lo < hi:
        mid = (lo + hi) // 2
        entry = entry_at(mid)
        if entry is None or entry.epoch > epoch:
            hi = mid
        else:
            lo = mid + 1
    return lo

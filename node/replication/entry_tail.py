"""The newest entries in memory, as the bytes the WAL encoded: where senders cut frames from.

A replica that keeps up wants the few entries published since its last frame. They are read
from this bounded tail (``tail_entries`` entries or ``tail_bytes`` bytes, whichever binds
first) rather than from the WAL files; a replica behind the tail is served from the files a
frame's worth at a time (``take_frame``).

The tail holds each entry's encoded payload (``payload_of``: the WAL made it, and it is what
a frame splices in), not the ``WalEntry`` and its ``Mutation`` objects. A full tail is 8,192
entries that live for seconds: as objects, four or five containers each that the garbage
collector tracks, promotes to its oldest generation and walks in every full collection (a
primary under load paused 115 to 250 ms in those); bytes are not tracked at all. The rare
reader that needs an entry's fields (the resume point's epoch, a replica's lag) decodes one.

A frame is cut from whichever end of the tail is nearer: ``islice`` from the left steps over
every older entry, which for a full tail cost each sender tens of microseconds per frame.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable

import msgpack
from shardkv.node.replication import protocol as proto
from shardkv.node.wal.record import WalEntry, payload_of


def decode_payload(payload: bytes) -> WalEntry:
    """The entry ``payload`` encodes (its payload cached on it, as the WAL's are)."""
    entry = WalEntry.from_wire(msgpack.unpackb(payload, raw=False))
    object.__setattr__(entry, "payload", payload)
    return entry


class EntryTail:
    """Payloads of consecutive LSNs (an entry that does not follow starts it afresh)."""

    __slots__ = ("_bytes", "_bytes_limit", "_first", "_limit", "_payloads")

    def __init__(self, entries: int, nbytes: int) -> None:
        self._payloads: collections.deque[bytes] = collections.deque()
        self._first = 0  # the LSN of _payloads[0]
        self._bytes = 0
        self._limit = entries
        self._bytes_limit = nbytes

    def __len__(self) -> int:
        return len(self._payloads)

    @property
    def first_lsn(self) -> int:
        """The oldest entry's LSN (0: empty)."""
        return self._first if self._payloads else 0

    @property
    def last_lsn(self) -> int:
        """The newest entry's LSN (0: empty)."""
        return self._first + len(self._payloads) - 1 if self._payloads else 0

    def add(self, entry: WalEntry) -> bool:
        """Append ``entry``; False (nothing changed) if the tail already holds its LSN."""
        payloads = self._payloads
        lsn = entry.lsn
        if payloads:
            last = self._first + len(payloads) - 1
            if lsn != last + 1:
                if lsn <= last:
                    return False
                payloads.clear()  # a gap: the WAL files cover what is missing
                self._bytes = 0
        if not payloads:
            self._first = lsn
        payload = payload_of(entry)
        payloads.append(payload)
        self._bytes += len(payload)
        while len(payloads) > self._limit or (self._bytes > self._bytes_limit
                                              and len(payloads) > 1):
            self._bytes -= len(payloads.popleft())
            self._first += 1
        return True

    def covers(self, lsn: int) -> bool:
        """Whether a reader from ``lsn`` can be served from here (it may get nothing yet)."""
        return bool(self._payloads) and self._first <= lsn

    def entry_at(self, lsn: int) -> WalEntry | None:
        """The entry at ``lsn``, decoded (None: not in the tail)."""
        payloads = self._payloads
        if payloads and self._first <= lsn < self._first + len(payloads):
            return decode_payload(payloads[lsn - self._first])
        return None

    def snapshot(self) -> tuple[int, list[bytes]]:
        """The first LSN and a copy of the payloads (for a reader in another thread)."""
        return self._first, list(self._payloads)

    def frame_from(self, lsn: int) -> list[bytes]:
        """Up to a frame's worth of the payloads of the entries from ``lsn`` (``covers(lsn)``
        must hold); [] when there is nothing new."""
        payloads = self._payloads
        count = self._first + len(payloads) - lsn if payloads else 0
        if count <= 0:
            return []
        offset = len(payloads) - count
        take = min(count, proto.MAX_ENTRIES_PER_FRAME)
        if offset < count:
            batch = list(itertools.islice(payloads, offset, offset + take))
        else:
            batch = list(itertools.islice(reversed(payloads), count))
            batch.reverse()
            del batch[take:]
        total = 0
        for index, payload in enumerate(batch):
            total += len(payload)
            if total >= proto.MAX_BYTES_PER_FRAME:
                del batch[index + 1:]
                break
        return batch


def take_frame(entries: Iterable[WalEntry], first_lsn: int) -> list[bytes]:
    """The payloads of the first frame's worth of ``entries`` (read from the WAL files),
    which must run on from ``first_lsn``: a frame's LSNs are known from its first."""
    batch: list[bytes] = []
    size = 0
    for entry in entries:
        if entry.lsn != first_lsn + len(batch):
            raise ConnectionError(f"the log read gave lsn {entry.lsn}, expected "
                                  f"{first_lsn + len(batch)}")
        payload = payload_of(entry)
        batch.append(payload)
        size += len(payload)
        if len(batch) >= proto.MAX_ENTRIES_PER_FRAME or size >= proto.MAX_BYTES_PER_FRAME:
            break
    return batch

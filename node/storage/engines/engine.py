"""The storage engine interface: the materialized state that the WAL is replayed into.

The WAL is the durability log; an engine only holds what the log says, applied in LSN order.
That is why the interface is so small: ``apply`` is the one way state changes (plus ``load``
from a snapshot), and ``applied_lsn`` says how far into the log the state is. The Store owns
every semantic decision (conditions, TTL visibility, compression); an engine stores encoded
values and answers ordered, raw questions about them.

Two implementations share one test suite: ``MemoryEngine`` (a sorted in-memory table) and
``SqliteEngine`` (aiosqlite, for data larger than memory, durable by itself so a restart
replays only the WAL tail after its applied LSN).
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from shardkv.node.wal.record import WalEntry


class StoredItem(NamedTuple):
    """One key's stored state. A NamedTuple (a plain tuple underneath) rather than a class
    with attributes: the memory engine holds millions of these, and a 4-tuple is the most
    compact record Python has. ``value`` is encoded (``compressed`` says whether it is zstd);
    ``version`` is the LSN of the entry that last wrote the key; ``expires_at`` is Unix time."""

    value: bytes
    compressed: bool
    version: int
    expires_at: float | None


# One row of a snapshot stream, in the order ``storage/snapshots/snapshot.py`` reads and writes:
# (key, value, compressed, version, expires_at). A plain tuple rather than a NamedTuple:
# snapshots stream millions of rows, and a plain tuple is several times cheaper to build.
SnapshotRow = tuple[bytes, bytes, bool, int, float | None]


# Keys -> keep each or not, asked for a list of keys at a time: an online migration streams
# the third of a shard that moves and hashes every key, which a call per key would dominate.
KeySelect = Callable[[list[bytes]], list[bool]]


class SnapshotView(NamedTuple):
    """A consistent view of the whole engine at ``lsn``: iterating ``rows`` yields every key
    in key order exactly as it was at that LSN, even while later entries are applied."""

    lsn: int
    count: int  # type: ignore[assignment]  # a field named like tuple.count, by design
    rows: AsyncIterator[SnapshotRow]


class Engine(abc.ABC):
    """What the Store needs from a storage engine. Every method is async because one
    implementation does I/O; the memory engine's never suspend."""

    name: str

    @property
    @abc.abstractmethod
    def applied_lsn(self) -> int:
        """The LSN of the last entry applied (0 for an empty engine). Entries are applied in
        order, so everything up to this LSN is reflected and nothing after it is."""

    @property
    @abc.abstractmethod
    def key_count(self) -> int:
        """How many keys are stored, counting expired keys the sweeper has not deleted yet."""

    # True when ``live_version`` answers without I/O (everything is in memory): the write
    # path then learns the version a blind write replaces without an await.
    sync_reads: bool = False

    def live_version(self, key: bytes, now: float) -> int | None:
        """The key's version if it exists and has not expired at ``now``, else None.
        Only for engines with ``sync_reads``; the others are read with ``get``, and asking
        them is a caller's bug (the commit pipeline checks ``sync_reads`` first)."""
        raise TypeError(f"{self.name} reads only through get(): sync_reads is False")

    @abc.abstractmethod
    async def get(self, key: bytes) -> StoredItem | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]: ...

    @abc.abstractmethod
    async def apply(self, entry: WalEntry) -> None:
        """Apply one WAL entry: every key it puts gets ``entry.lsn`` as its version, every key
        it deletes is removed. ``entry.lsn`` must be greater than ``applied_lsn``."""

    async def apply_wire(self, raw: list[Any]) -> None:
        """Apply one entry given in its msgpack form ``[lsn, epoch, ts, mutations]`` (as
        recovery reads it from the WAL). An engine may apply it without building the
        ``WalEntry``; this default builds it. A malformed entry raises ``ValueError`` or
        ``TypeError``, possibly after part of it was applied: recovery then fails and the
        engine is discarded."""
        await self.apply(WalEntry.from_wire(raw))

    @abc.abstractmethod
    async def scan(
        self, start: bytes | None, end: bytes | None, limit: int
    ) -> list[tuple[bytes, StoredItem]]:
        """Up to ``limit`` items with ``start <= key < end`` in key order (None = unbounded).
        Expired items are included: filtering by time is the Store's job."""

    @abc.abstractmethod
    async def expired(self, now: float, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` (key, version) pairs whose ``expires_at <= now``, soonest first,
        without scanning the whole table (an expiry index). Nothing is removed: the sweeper
        deletes them through the WAL so that replicas delete the same keys."""

    @abc.abstractmethod
    async def snapshot_view(self, select: KeySelect | None = None) -> SnapshotView:
        """A consistent view for a snapshot, taken at ``applied_lsn``; applying continues
        while the view is read. With ``select``, only the rows whose key it keeps (asked a
        list of keys at a time, see ``select_rows``); ``count`` is still every key."""

    async def migration_view(self, select: KeySelect,
                             slice_rows: int | None = None) -> SnapshotView:
        """The rows ``select`` keeps, for an online migration: each as it was at ``lsn``
        *or later*. Enough there, and cheaper than a frozen view: the source ships its log
        from ``lsn + 1`` after the rows, and the target keeps the newest version of each key,
        so a row read after a later write only arrives early (docs/resharding.md, step 3).
        ``slice_rows``: at most this many rows read (and keys passed to ``select``) between
        two yields to the event loop, where the engine reads on the loop (None: its
        default). This default is the consistent view."""
        return await self.snapshot_view(select)

    async def migration_keys(self, select: KeySelect,
                             slice_rows: int | None = None) -> AsyncIterator[list[bytes]]:
        """The keys ``select`` keeps, a list at a time, as ``migration_view`` would list
        them, for a migration's clean-up, which needs nothing else (the Store reads each
        key's version again as it deletes it). This default takes them from
        ``migration_view``; an engine may skip decoding the rows."""
        view = await self.migration_view(select, slice_rows)
        chunk: list[bytes] = []
        async for row in view.rows:
            chunk.append(row[0])
            if len(chunk) >= SELECT_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @abc.abstractmethod
    async def load(self, rows: Iterable[SnapshotRow], lsn: int) -> None:
        """Replace the whole state with ``rows`` (a snapshot at ``lsn``)."""

    @abc.abstractmethod
    async def close(self) -> None: ...


SELECT_CHUNK = 4096


async def select_rows(rows: AsyncIterator[SnapshotRow],
                      select: KeySelect) -> AsyncIterator[SnapshotRow]:
    """The rows of ``rows`` whose key ``select`` keeps, asked ``SELECT_CHUNK`` at a time."""
    chunk: list[SnapshotRow] = []
    async for row in rows:
        chunk.append(row)
        if len(chunk) >= SELECT_CHUNK:
            for kept in itertools.compress(chunk, select([r[0] for r in chunk])):
                yield kept
            chunk = []
    if chunk:
        for kept in itertools.compress(chunk, select([r[0] for r in chunk])):
            yield kept


def check_apply_order(engine_name: str, applied_lsn: int, entry: WalEntry) -> None:
    """Refuse an entry applied twice or behind: versions only grow, and applying an old entry
    over newer state would silently roll keys back."""
    if entry.lsn <= applied_lsn:
        raise ValueError(
            f"{engine_name}: entry lsn {entry.lsn} is not after applied lsn {applied_lsn}"
        )

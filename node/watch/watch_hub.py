"""Fans applied entries out to the node's watches, in LSN order.

The commit pipeline calls :meth:`WatchHub.publish` for each entry right after the engine
applied it (so it is durable and, with replication, committed by the shard's majority), in
LSN order and with no await in between. A new watch registers with :meth:`subscribe`, which
returns the LSN the hub last published: the session reads the log up to that LSN and the
hub delivers everything after it, so history and live meet exactly, without a gap or an
overlap. When the store's state is replaced (a snapshot installed) the log the watches were
following is gone: :meth:`reset` ends them all and they resume (or learn ``COMPACTED``).

On a replica, what it has applied is not yet known to be committed: its primary ships
entries before a majority holds them, and an entry no majority held may be dropped at a
failover (and its LSN reused). A watch must never report one, or a client resuming from its
version elsewhere would skip the write that reused it. So a replica's hub carries a
``commit_limit``, the primary's majority LSN as the stream last told it (``commit``): watch
sessions send nothing above it (``watch_session.py``). On a primary it is None (its
applier publishes only what its commit gate let through).

Subscribers are kept in groups of equal filter, values flag and shard (``Subscriber.group``):
:meth:`publish` makes an entry's events once per group, from the first subscriber that still
wants the entry, and gives the same batch to the rest (``event_frames.py``). With a thousand
watches of one prefix, the filter runs and the event dicts are built once per entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store imports the hub; the subscriber imports storage code
    from shardkv.node.wal.record import WalEntry
    from shardkv.node.watch.subscriber import Subscriber

DEFAULT_MAX_WATCHES = 1024


class WatchHub:
    def __init__(self, published_lsn: int, *, max_watches: int = DEFAULT_MAX_WATCHES) -> None:
        self.published_lsn = published_lsn
        self.max_watches = max_watches
        self._subscribers: set[Subscriber] = set()
        # Subscriber.group -> its subscribers (a dict as an ordered set), for publish().
        self._groups: dict[tuple[object, ...], dict[Subscriber, None]] = {}
        # (last LSN published before, LSN after) of the latest reset: a migration's LSN
        # jump reports where the log stopped (node/migration/floor.py, docs/watch.md).
        self.last_reset: tuple[int, int] | None = None
        self.commit_limit: int | None = None
        # The highest ring version a primary's replication frames carried (a replica): its
        # watch frames say at least this ring (watch_session.py, docs/watch.md).
        self.primary_ring: int | None = None

    def follow_commit(self, limit: int | None) -> None:
        """Serve up to ``limit`` (a replica; raised by ``commit``), or without a limit
        (None: a primary). A replica keeps the limit it has."""
        if limit is None or self.commit_limit is None:
            self.commit_limit = limit
            self._poke()

    def commit(self, lsn: int) -> None:
        """The primary's commit point, as the replication stream tells it."""
        limit = self.commit_limit
        if limit is not None and lsn > limit:
            self.commit_limit = lsn
            self._poke()

    def saw_primary_ring(self, ring_version: int) -> None:
        """The primary's ring version, as the replication stream tells it."""
        if self.primary_ring is None or ring_version > self.primary_ring:
            self.primary_ring = ring_version

    def _poke(self) -> None:
        for subscriber in self._subscribers:
            subscriber.poke()

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, entry: WalEntry) -> None:
        """One applied entry (in LSN order)."""
        lsn = self.published_lsn = entry.lsn
        for group in self._groups.values():
            made = False
            batch = None
            for subscriber in group:
                if not subscriber.wants(lsn):
                    continue
                if not made:
                    batch, made = subscriber.batch_of(entry), True
                subscriber.accept(lsn, batch)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        self._groups.setdefault(subscriber.group, {})[subscriber] = None

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        group = self._groups.get(subscriber.group)
        if group is not None:
            group.pop(subscriber, None)
            if not group:
                del self._groups[subscriber.group]

    def reset(self, published_lsn: int, reason: str) -> None:
        """The state was replaced underneath: end every watch."""
        self.last_reset = (self.published_lsn, published_lsn)
        self.published_lsn = published_lsn
        for subscriber in self._subscribers:
            subscriber.close(reason)
        self._subscribers.clear()
        self._groups.clear()

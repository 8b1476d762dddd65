"""Fans applied entries out to the node's watches, in LSN order.

The commit pipeline calls :meth:`WatchHub.publish` for each entry right after the engine
applied it (so it is durable and, with replication, committed by the shard's majority), in
LSN order and with no await in between. A new watch registers with :meth:`subscribe`, which
returns the LSN the hub last published: the session reads the log up to that LSN and the
hub delivers everything after it, so history and live meet exactly, without a gap or an
overlap. When the store's state is replaced (a snapshot installed) the log the watches were
following is gone: :meth:`reset` ends them all and they resume (or learn ``COMPACTED``).
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
        # (last LSN published before, LSN after) of the latest reset: a migration's LSN
        # jump reports where the log stopped (node/migration/floor.py, docs/watch.md).
        self.last_reset: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._subscribers)

    def publish(self, entry: WalEntry) -> None:
        """One applied entry (in LSN order)."""
        self.published_lsn = entry.lsn
        for subscriber in self._subscribers:
            subscriber.offer(entry)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def reset(self, published_lsn: int, reason: str) -> None:
        """The state was replaced underneath: end every watch."""
        self.last_reset = (self.published_lsn, published_lsn)
        self.published_lsn = published_lsn
        for subscriber in self._subscribers:
            subscriber.close(reason)
        self._subscribers.clear()

"""The write fence of the moving arcs on a source shard (docs/resharding.md, "Fence").

While the map says a migration is ``flipping``, every member of a source shard refuses
requests for keys in the moving arcs with ``UNAVAILABLE`` (retryable: the client tries again
and, after the flip, is redirected to the new owner). Because the fence is read from the
Raft map, a new primary elected mid-fence fences too.

During the whole migration the fence also counts the writes to moving keys that are in
flight (past the check, not yet answered), so the final catch-up can wait for the last of
them before it reads the log's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.migration_record import BEFORE_FLIP, FLIPPING
from shardkv.node.migration.arcs import MovingArcs, target_spec


class ArcFence:
    def __init__(self) -> None:
        self.arcs: MovingArcs | None = None  # this shard's moving arcs, while migrating
        self.fenced = False
        self.map_version = 0
        self._inflight = 0
        # Keyed requests seen (reads and writes, fenced or not): the copy's and the clean-up's
        # throttle pace only while there is a foreground to protect (throttle.py).
        self.requests = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def follow(self, cluster_map: ClusterMap, shard: str | None) -> None:
        """Take the fence state from a new map."""
        self.map_version = cluster_map.version
        record = cluster_map.migration
        if (record is None or shard is None or shard not in record.sources
                or record.state not in BEFORE_FLIP):
            self.arcs, self.fenced = None, False
            return
        self.arcs = MovingArcs.of(cluster_map.ring,
                                  target_spec(cluster_map.ring, record.target_ring),
                                  shard, record.targets)
        self.fenced = record.state == FLIPPING

    def enter(self, keys: Iterable[bytes], writes: bool) -> bool:
        """Called before a keyed request: raises while the keys' arcs are fenced; returns
        whether a write was counted (call ``leave`` then).

        Reads are fenced too: between the flip and the moment this node learns of it, the
        target may already have accepted a newer write, and a read here would return the
        older value (a stale "strong" read). Refused, the client retries and is redirected.
        """
        self.requests += 1
        arcs = self.arcs
        if arcs is None:
            return False
        destination = next((d for d in map(arcs.destination, keys) if d is not None), None)
        if destination is None:
            return False
        if self.fenced:
            raise Unavailable(f"this key is moving to shard {destination}; retry shortly",
                              moving_to=destination)
        if not writes:
            return False
        self._inflight += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

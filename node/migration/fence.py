"""The write fence of the moving arcs on a source shard (docs/resharding.md, "Fence").

While the map says a migration is ``flipping``, every member of a source shard holds
requests for keys in the moving arcs until the fence lifts (the flip, or an abort), then
checks them again: after a flip that is ``STALE_MAP`` naming the new ring, and the client
goes straight to the new owner. A request still fenced after ``FENCE_HOLD_S`` is refused with
``UNAVAILABLE`` (retryable). Refusing at once, as it first did, sent every client into retry
backoff (8, 16, 32 ... ms) for a fence that lasts tens of milliseconds: the foreground's p99
within half a second of the flip was 200-360 ms. Because the fence is read from the Raft
map, a new primary elected mid-fence fences too.

Until the fence is up, it also counts every write in flight (past the check, not yet
ordered or failed), whatever its key, so the final catch-up can wait for the last of them
before it reads the log's end. Counting only the writes to moving keys, from the first map
that showed the migration, lost acknowledged writes (issue 12): a write that passed the check
just before that map arrived (or under an earlier migration's arcs) may still be on its way
to the log when the fence comes (a SQLite read before ordering, a wait for the store lock),
was not waited for, was ordered after the fenced LSN, never shipped, and deleted by the
cleaning. Once the fence is up nothing is counted (a write to a moving key is refused, any
other cannot matter), so the count only falls while the fence drains.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.migration_record import BEFORE_FLIP, FLIPPING
from shardkv.node.migration.arcs import MovingArcs, target_spec

# How long a request for a fenced key waits for the fence to lift before it is refused
# (``SHARDKV_FENCE_HOLD_MS``; 0 refuses at once).
FENCE_HOLD_S = float(os.environ.get("SHARDKV_FENCE_HOLD_MS") or 1000.0) / 1000


class ArcFence:
    def __init__(self) -> None:
        self.arcs: MovingArcs | None = None  # this shard's moving arcs, while migrating
        self.fenced = False
        self.map_version = 0
        self._inflight = 0  # writes counted by ``enter`` (before the fence), not yet left
        self._idle: asyncio.Event | None = None  # made only while someone drains
        self._draining = 0  # ``drained`` calls waiting (a fence handshake can be retried)
        # Keyed requests seen (reads and writes, fenced or not): the copy's and the clean-up's
        # throttle pace only while there is a foreground to protect (throttle.py).
        self.requests = 0
        self._lifted: asyncio.Event | None = None  # made only while a request is held

    def follow(self, cluster_map: ClusterMap, shard: str | None) -> None:
        """Take the fence state from a new map."""
        self.map_version = cluster_map.version
        record = cluster_map.migration
        if (record is None or shard is None or shard not in record.sources
                or record.state not in BEFORE_FLIP):
            self.arcs, self.fenced = None, False
            self._wake_if_lifted()
            return
        self.arcs = MovingArcs.of(cluster_map.ring,
                                  target_spec(cluster_map.ring, record.target_ring),
                                  shard, record.targets)
        self.fenced = record.state == FLIPPING
        self._wake_if_lifted()

    def _wake_if_lifted(self) -> None:
        if not self.fenced and self._lifted is not None:
            self._lifted.set()
            self._lifted = None

    async def lifted(self, timeout_s: float | None = None) -> bool:
        """Wait until the fence is down (a new map showed the flip or an abort); False if it
        is still up after ``timeout_s``. The map is installed before this wakes, so a
        request checked again sees the ring that lifted the fence."""
        if not self.fenced:
            return True
        if timeout_s is None:
            timeout_s = FENCE_HOLD_S
        if timeout_s <= 0:
            return False
        if self._lifted is None:
            self._lifted = asyncio.Event()
        try:
            await asyncio.wait_for(self._lifted.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def enter(self, keys: Iterable[bytes], writes: bool) -> bool:
        """Called before a keyed request: raises while the keys' arcs are fenced; returns
        whether a write was counted (call ``leave`` then, once it is ordered or failed).

        Reads are fenced too: between the flip and the moment this node learns of it, the
        target may already have accepted a newer write, and a read here would return the
        older value (a stale "strong" read). Refused, the client retries and is redirected.
        """
        self.requests += 1
        if not self.fenced:
            if not writes:
                return False
            self._inflight += 1  # any key may be moving by the time it is ordered
            return True
        arcs = self.arcs
        assert arcs is not None  # ``follow`` fences only with arcs
        destination = next((d for d in map(arcs.destination, keys) if d is not None), None)
        if destination is not None:
            raise Unavailable(f"this key is moving to shard {destination}; retry shortly",
                              moving_to=destination)
        return False

    def leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    async def drained(self, timeout_s: float) -> None:
        """Wait until no counted write is in flight (``TimeoutError`` after ``timeout_s``)."""
        self._draining += 1
        try:
            async with asyncio.timeout(timeout_s):
                while self._inflight:
                    if self._idle is None:
                        self._idle = asyncio.Event()
                    await self._idle.wait()
        finally:
            self._draining -= 1

    def status(self) -> dict[str, Any]:
        """For the export's status: whether the fence is up and what it still waits for."""
        return {"fenced": self.fenced, "draining": self._draining > 0,
                "writes_in_flight": self._inflight}

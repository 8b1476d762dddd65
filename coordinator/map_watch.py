"""The served map and its watchers.

The Raft thread publishes each new map here (through ``loop.call_soon_threadsafe``); HTTP
handlers read the current one or wait for one newer than a version (``GET /v1/map?since=V``).
Encodings are cached per (version, leader), so a change watched by hundreds of clients is
encoded once, not once per watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shardkv.cluster.cluster_map import ClusterMap

# Told (before, after) at each applied map, on the loop thread (coordinator/event_log.py).
MapListener = Callable[[ClusterMap, ClusterMap], None]


class MapWatch:
    def __init__(self) -> None:
        self.current = ClusterMap()
        self.loaded = False
        self._changed = asyncio.Event()
        self._encoded: dict[tuple[int, str | None, str], bytes] = {}
        self.closed = False
        self.listeners: list[MapListener] = []

    def close(self) -> None:
        """Shutting down: release every long poll now (they answer "nothing newer")."""
        self.closed = True
        self._changed.set()

    def publish(self, cluster_map: ClusterMap) -> None:
        """Called on the loop thread with each applied map (versions only rise)."""
        if cluster_map.version < self.current.version:
            return
        before, self.current = self.current, cluster_map
        for listener in self.listeners:
            listener(before, cluster_map)
        self.loaded = True
        self._encoded.clear()
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_newer(self, since: int, wait_s: float) -> ClusterMap | None:
        """The current map once its version exceeds ``since``; None when ``wait_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self.current.version <= since:
            if self.closed:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return None
        return self.current

    def encoded(self, cluster_map: ClusterMap, leader: str | None, fmt: str) -> bytes:
        key = (cluster_map.version, leader, fmt)
        body = self._encoded.get(key)
        if body is None:
            served = ClusterMap(
                version=cluster_map.version,
                leader=leader,
                replication_factor=cluster_map.replication_factor,
                ring=cluster_map.ring,
                shards=cluster_map.shards,
                nodes=cluster_map.nodes,
                coordinators=cluster_map.coordinators,
                migration=cluster_map.migration,
                migrations=cluster_map.migrations,
            )
            body = served.to_json() if fmt == "json" else served.to_msgpack()
            if cluster_map is self.current:
                self._encoded[key] = body
        return body

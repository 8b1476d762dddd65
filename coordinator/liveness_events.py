"""``node.liveness`` events: a node turning suspect, dead or alive, as the failure detector
sees it, on every coordinator's feed.

Liveness lives in the leader's memory only (heartbeats are not Raft commands), so it cannot
be derived from the applied maps as the other cluster events are. While at least one feed
is open, each coordinator reads the liveness table once a second (its own when it leads;
otherwise the leader's ``GET /admin/nodes``, which names the leader's view, signed as
``coordinator``) and sends every change to its feeds. The first reading after a start is the
baseline and sends nothing. These events are news, not history: they are not kept for
``since=`` (which replays map-derived events only) and carry no ``map_version``. A node that
dies is ``suspect`` after ``suspect_s`` and ``dead`` after ``dead_s`` of silence, seconds
before the failover's map change; the map's ``node.down`` is a decision, this is a symptom.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from shardkv.cluster.peer_auth import COORDINATOR, signed_headers
from shardkv.coordinator.feed_poller import FeedPoller

INTERVAL_S = 1.0
PATH = "/admin/nodes"


class LivenessWatcher:
    """One polling task per coordinator, running only while feeds are open."""

    def __init__(self, coord: Any, interval_s: float = INTERVAL_S) -> None:
        self.coord = coord
        self.interval_s = interval_s
        self._poller = FeedPoller(self._run, "liveness-events")
        self._last: dict[str, str] = {}

    def wake(self) -> None:
        """A feed opened: make sure the poller runs."""
        self._poller.wake()

    async def close(self) -> None:
        await self._poller.close()

    async def _run(self) -> None:
        self._last = {}
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self.coord.events.subscribers:
                states = await self._read(session)
                if states is not None:
                    self._publish(states)
                await asyncio.sleep(self.interval_s)

    async def _read(self, session: aiohttp.ClientSession) -> dict[str, str] | None:
        coord = self.coord
        nodes = coord.watch.current.nodes
        if coord.is_leader():
            view = coord.liveness.snapshot(nodes)
            return {n: str(v["liveness"]) for n, v in view.items()}
        leader_url = coord.leader_url()
        if not leader_url or leader_url == coord.config.url:
            return None
        headers = {"Accept": "application/json", "X-Shardkv-Forwarded": "1",
                   **signed_headers("GET", PATH, b"", COORDINATOR,
                                    coord.peer_verifier.secret if coord.peer_verifier else None)}
        if "Authorization" not in headers and coord.config.admin_token:
            headers["Authorization"] = f"Bearer {coord.config.admin_token}"
        try:
            async with session.get(f"{leader_url}{PATH}", headers=headers) as resp:
                if resp.status != 200:
                    return None
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
        if not isinstance(body, dict) or body.get("liveness_from") is None:
            return None  # the answer did not come from a leader's table
        return {str(n): str(v.get("liveness")) for n, v in dict(body.get("nodes") or {}).items()
                if isinstance(v, dict) and v.get("liveness") is not None}

    def _publish(self, states: dict[str, str]) -> None:
        before, self._last = self._last, states
        if not before:
            return  # the baseline
        nodes = self.coord.watch.current.nodes
        now = round(time.time(), 3)
        for node_id, state in sorted(states.items()):
            old = before.get(node_id)
            if old is not None and old != state:
                info = nodes.get(node_id)
                self.coord.events.broadcast({
                    "type": "node.liveness", "node": node_id, "liveness": state,
                    "before": old, "shard": info.shard if info is not None else None,
                    "time": now})

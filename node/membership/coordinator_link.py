"""The node's side of the coordinator: register, heartbeat, watch the map.

A storage node knows one or more coordinator URLs (``--coordinator URL[,URL]``). This link:

- registers the node (any coordinator accepts a registration; the link tries each URL in
  turn and follows the leader hints in 421 answers), and keeps the id it was given in
  ``<data_dir>/node_id`` so a restarted node gets its place back. Before the first
  registration it writes a random token to ``<data_dir>/node_token``: a registration whose
  answer was lost and is retried gets the same id, not a second one;
- heartbeats the coordinator leader with the node's LSN, epoch and role (the answer carries
  the map version, so the node knows when it is behind);
- watches ``GET /v1/map?since=V`` (a long poll) and reports every new map, with the node's
  own placement in it (shard, role, epoch, ring version), through ``on_change``.

The node server owns the link (``await link.start()``, ``await link.stop()``) and gives it a
``status`` callable for heartbeats. Nothing here blocks the event loop: files are written
through a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ROLE_NONE, ClusterMap
from shardkv.cluster.control_messages import HeartbeatRequest, RegisterRequest
from shardkv.cluster.control_protocol import require_compatible, version_headers, version_in
from shardkv.cluster.durable_file import ensure_dir, write_atomically
from shardkv.cluster.errors import (
    ShardKVError,
    Unavailable,
    UnsupportedProtocol,
    error_from_dict,
)
from shardkv.cluster.peer_auth import UNREGISTERED_NODE, node_principal, signed_headers
from shardkv.node.clock import NODE_CLOCK
from yarl import URL

log = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
NODE_TOKEN_FILE = "node_token"


@dataclass(frozen=True, slots=True)
class Placement:
    """This node's place in a given map."""

    node_id: str
    shard: str | None
    role: str
    epoch: int
    ring_version: int
    map_version: int
    status: str

    @classmethod
    def from_map(cls, node_id: str, cluster_map: ClusterMap) -> Placement:
        node = cluster_map.nodes.get(node_id)
        shard = cluster_map.shards.get(node.shard) if node and node.shard else None
        return cls(
            node_id=node_id,
            shard=node.shard if node else None,
            role=node.role if node else ROLE_NONE,
            epoch=shard.epoch if shard else 0,
            ring_version=cluster_map.ring.version,
            map_version=cluster_map.version,
            status=node.status if node else "removed",
        )


NodeStatus = dict[str, Any]  # {"lsn": int, "epoch": int, "role": str}
OnChange = Callable[[Placement, ClusterMap], Awaitable[None] | None]


def _write_durably(path: str, text: str) -> None:
    # Owner-only: the registration token is what proves this node owns its id.
    write_atomically(path, (text + "\n").encode("utf-8"), mode=0o600)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


class CoordinatorLink:
    def __init__(
        self,
        coordinator_urls: Sequence[str],
        data_dir: str,
        advertise_url: str,
        *,
        status: Callable[[], NodeStatus],
        on_change: OnChange | None = None,
        shard: str | None = None,
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
        heartbeat_interval_s: float = 1.0,
        request_timeout_s: float = 5.0,
        heartbeat_timeout_s: float = 1.0,
        watch_timeout_s: float = 25.0,
        clock: Callable[[], float] = NODE_CLOCK.monotonic,
    ) -> None:
        if not coordinator_urls:
            raise ValueError("at least one coordinator URL is needed")
        self.urls = [u.rstrip("/") for u in coordinator_urls]
        self.data_dir = data_dir
        self.advertise_url = advertise_url
        self.status = status
        self.on_change = on_change
        self.shard = shard
        self.labels = dict(labels or {})
        self.heartbeat_interval_s = heartbeat_interval_s
        self.request_timeout_s = request_timeout_s
        # One heartbeat attempt must not outlast the lease it would renew: a leader whose
        # host is gone never refuses a connection, and waiting the full request timeout on
        # it (5 s) let every primary's 2.4 s lease run out before the next member was tried
        # (found by the chaos harness's container mode; local processes refuse at once).
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self._clock = clock
        self.wanted_node_id = node_id or None  # an operator-chosen id (``--id``) wins
        self.node_id: str | None = None
        self.cluster_map = ClusterMap()
        self.placement: Placement | None = None
        self.leader_url: str | None = None
        self.removed = False
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._next_url = 0
        # Called with (the time the heartbeat was sent, on ``clock``, the leader's answer)
        # after each answered heartbeat: the primary lease (node/replication/lease.py) is renewed
        # from it,
        # so ``clock`` must be the lease's clock (both default to the node's monotonic one).
        self.on_heartbeat: Callable[[float, dict[str, Any]], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, *, register_deadline_s: float = 60.0) -> Placement:
        """Register (retrying across coordinators until ``register_deadline_s``), then start
        heartbeating and watching. Returns the node's placement."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout_s)
        )
        try:
            placement = await asyncio.wait_for(self._register_until_done(), register_deadline_s)
        except BaseException:
            await self._session.close()
            raise
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="coordinator-heartbeat"),
            asyncio.create_task(self._watch_loop(), name="coordinator-watch"),
        ]
        return placement

    def stop_heartbeats(self) -> None:
        """Go silent to the failure detector (this node cannot take writes any more): the
        coordinator then fails its shard over instead of waiting for it. The map watch goes
        on."""
        for task in self._tasks:
            if task.get_name() == "coordinator-heartbeat":
                task.cancel()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, body: Any = None, *,
                    timeout_s: float | None = None) -> tuple[int, Any]:
        assert self._session is not None
        data = wire.pack(body) if body is not None else None
        headers = {"Accept": wire.MSGPACK, **version_headers()}
        if data is not None:
            headers["Content-Type"] = wire.MSGPACK
        if method != "GET":  # registration and heartbeats prove who sends them
            principal = node_principal(self.node_id) if self.node_id else UNREGISTERED_NODE
            headers.update(signed_headers(method, URL(url).raw_path_qs, data or b"", principal))
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.request_timeout_s)
        async with self._session.request(method, url, data=data, headers=headers,
                                         timeout=timeout) as resp:
            raw = await resp.read()
            if method != "GET" and resp.status == 200:
                # The coordinator names its version (none: version 1); refuse one out of
                # this node's window (cluster/control_protocol.py).
                require_compatible(version_in(resp.headers),
                                   peer=f"the coordinator at {URL(url).origin()}")
            if resp.status == 304 or not raw:
                return resp.status, None
            if wire.MSGPACK in resp.headers.get("Content-Type", ""):
                return resp.status, wire.unpack(raw)
            return resp.status, wire.from_json(raw)

    def _candidates(self) -> list[str]:
        """Coordinator URLs to try, the known leader first, then a rotation of the rest."""
        learned = [c.url for c in self.cluster_map.coordinators.values() if c.url]
        ordered = [self.leader_url] if self.leader_url else []
        start = self._next_url % len(self.urls)
        ordered += self.urls[start:] + self.urls[:start] + learned
        return list(dict.fromkeys(u for u in ordered if u))  # first occurrence of each

    # -- registration --------------------------------------------------------------------

    async def _register_until_done(self) -> Placement:
        await asyncio.to_thread(ensure_dir, self.data_dir)
        id_path = os.path.join(self.data_dir, NODE_ID_FILE)
        token_path = os.path.join(self.data_dir, NODE_TOKEN_FILE)
        self.node_id = self.wanted_node_id or await asyncio.to_thread(_read_text, id_path)
        token = await asyncio.to_thread(_read_text, token_path)
        if token is None:
            token = secrets.token_hex(16)
            await asyncio.to_thread(_write_durably, token_path, token)
        body: RegisterRequest = {"url": self.advertise_url, "labels": self.labels,
                                 "token": token}
        if self.node_id:
            body["node_id"] = self.node_id
        if self.shard:
            body["shard"] = self.shard
        delay = 0.1
        while True:
            for url in self._candidates():
                try:
                    status, answer = await self._call("POST", url + routes.NODE_REGISTER,
                                                      dict(body))
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.debug("register: %s unreachable: %s", url, exc)
                    continue
                if status == 200 and isinstance(answer, dict):
                    return await self._registered(answer, id_path)
                error = error_from_dict(answer if isinstance(answer, dict) else {})
                if not error.retryable:
                    raise error
                if error.details.get("leader_url"):
                    self.leader_url = error.details["leader_url"]
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    async def _registered(self, answer: dict[str, Any], id_path: str) -> Placement:
        node_id = str(answer["node_id"])
        if node_id != self.node_id:
            await asyncio.to_thread(_write_durably, id_path, node_id)
            self.node_id = node_id
        self.heartbeat_interval_s = float(answer.get("heartbeat_interval_s",
                                                     self.heartbeat_interval_s))
        cluster_map = ClusterMap.from_dict(answer["map"])
        log.info("registered with the coordinator",
                 extra={"fields": {"node_id": node_id, "shard": answer.get("shard"),
                                   "role": answer.get("role"), "epoch": answer.get("epoch")}})
        await self._apply_map(cluster_map)
        assert self.placement is not None
        return self.placement

    # -- map -----------------------------------------------------------------------------

    async def _apply_map(self, cluster_map: ClusterMap) -> None:
        if cluster_map.version < self.cluster_map.version:
            return
        self.cluster_map = cluster_map
        leader_url = cluster_map.coordinator_url(cluster_map.leader)
        if leader_url:
            self.leader_url = leader_url
        assert self.node_id is not None
        placement = Placement.from_map(self.node_id, cluster_map)
        self.placement = placement
        if self.on_change is not None:
            outcome = self.on_change(placement, cluster_map)
            if inspect.isawaitable(outcome):
                await outcome

    async def _watch_loop(self) -> None:
        delay = 0.1
        while True:
            url = self._candidates()[0] if self.leader_url else self._rotate()
            try:
                status, answer = await self._call(
                    "GET",
                    f"{url}{routes.MAP}?since={self.cluster_map.version}"
                    f"&timeout={self.watch_timeout_s}",
                    timeout_s=self.watch_timeout_s + self.request_timeout_s,
                )
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("watch: %s failed: %s", url, exc)
                self.leader_url = None
                self._next_url += 1
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            if status == 200 and isinstance(answer, dict):
                try:
                    await self._apply_map(ClusterMap.from_dict(answer))
                except Exception:  # a failing callback must not stop the watch
                    log.exception("applying a new cluster map failed")
                    await asyncio.sleep(0.5)
            elif status != 304:
                self._next_url += 1
                await asyncio.sleep(0.2)

    def _rotate(self) -> str:
        candidates = self._candidates()
        return candidates[self._next_url % len(candidates)]

    async def refresh_map(self) -> ClusterMap:
        """Fetch the map now (a node that got STALE_MAP-like hints can force a refresh)."""
        for url in self._candidates():
            try:
                status, answer = await self._call("GET", url + routes.MAP)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if status == 200 and isinstance(answer, dict):
                await self._apply_map(ClusterMap.from_dict(answer))
                return self.cluster_map
        raise Unavailable("no coordinator answered")

    # -- heartbeats ------------------------------------------------------------------------

    async def heartbeat_once(self) -> dict[str, Any]:
        """Send one heartbeat to the leader (following 421 hints); its answer."""
        if self.node_id is None:
            raise Unavailable("not registered yet: no node id to heartbeat as")
        node_id = self.node_id
        status_body = dict(self.status())
        body: HeartbeatRequest = {
            "lsn": int(status_body.get("lsn", 0)),
            "epoch": int(status_body.get("epoch", 0)),
            "role": str(status_body.get("role", "")),
            "map_version": self.cluster_map.version,
        }
        last_error: ShardKVError = Unavailable("no coordinator answered the heartbeat")
        for url in self._candidates():
            # The lease runs from when the answered attempt was sent, not the first one.
            sent_at = self._clock()
            try:
                status, answer = await self._call(
                    "POST", url + routes.node_heartbeat(node_id), dict(body),
                    timeout_s=self.heartbeat_timeout_s)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last_error = Unavailable(f"{url}: {exc}")
                continue
            if status == 200 and isinstance(answer, dict):
                self.leader_url = url
                if self.on_heartbeat is not None:
                    self.on_heartbeat(sent_at, answer)
                return answer
            error = error_from_dict(answer if isinstance(answer, dict) else {})
            if error.details.get("leader_url"):
                self.leader_url = error.details["leader_url"]
            last_error = error
            if error.code.value == "NOT_FOUND":
                self.removed = True
                raise error
        raise last_error

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                answer = await self.heartbeat_once()
                if int(answer.get("map_version", 0)) > self.cluster_map.version:
                    # The watch normally delivers it first; if it is stuck on a lagging
                    # member, fetch from the leader now.
                    await asyncio.sleep(0.2)
                    if int(answer["map_version"]) > self.cluster_map.version:
                        await self.refresh_map()
            except Exception as exc:
                if not isinstance(exc, ShardKVError):
                    log.exception("heartbeat failed")
                    await asyncio.sleep(self.heartbeat_interval_s)
                    continue
                if self.removed:
                    log.error("this node was removed from the cluster map; heartbeats stop",
                              extra={"fields": {"node_id": self.node_id}})
                    return
                if isinstance(exc, UnsupportedProtocol):
                    log.error("heartbeat refused: %s", exc.message)
                else:
                    log.debug("heartbeat failed: %s", exc.message)
            await asyncio.sleep(self.heartbeat_interval_s)

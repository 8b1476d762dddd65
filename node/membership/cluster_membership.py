"""A node inside a cluster: its place in the map becomes what its operations enforce.

Without ``--coordinator`` a node is the primary of a one-node shard and owns every key. With
it, the node registers through :class:`~shardkv.node.membership.coordinator_link.CoordinatorLink`
and,
at every new map, takes from its placement:

- its role (``primary`` serves writes; a ``replica`` answers writes with ``NOT_PRIMARY``
  naming the primary's id and URL, so a client can go there directly);
- the ring version (a request naming an older ring gets ``STALE_MAP``);
- key ownership: a keyed request for a key the ring gives to another shard gets
  ``STALE_MAP`` too — the client's map is wrong, whatever version it names;
- a request naming a *newer* ring than the node's waits (briefly) for the node's map to
  catch up before ownership is checked: the client learned of a ring flip first.

The replication layer listens to the same placement changes through ``listeners`` to follow
a new primary or start serving replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shardkv.cluster.cluster_map import ROLE_PRIMARY, ClusterMap
from shardkv.cluster.errors import StaleMap
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.structured_log import log_fields
from shardkv.node.membership.coordinator_link import CoordinatorLink, Placement

if TYPE_CHECKING:
    from shardkv.node.server import NodeServer

logger = logging.getLogger("shardkv.node.membership")

ADVERTISE_ENV = "SHARDKV_ADVERTISE_URL"
PlacementListener = Callable[[Placement, ClusterMap], Awaitable[None]]
# How long a request naming a newer ring waits for this node's map. The map watch delivers a
# flip within milliseconds; this bounds the wait when it does not (a coordinator election),
# after which the request is checked against the map the node has.
# ``SHARDKV_RING_CATCH_UP_MS`` (0 answers at once, as before) sets it.
RING_CATCH_UP_S = float(os.environ.get("SHARDKV_RING_CATCH_UP_MS") or 500.0) / 1000
# A client cannot be ahead of the coordinators: a version further ahead than this is not a
# ring this node is about to see, and is not waited for (a stranger cannot park requests).
RING_AHEAD_LIMIT = 64
RING_FETCH_AFTER_S = 0.1


class ClusterMembership:
    """Owns the coordinator link of one node server and applies each map to its context."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.link: CoordinatorLink | None = None
        self.listeners: list[PlacementListener] = []
        self._shard: str | None = None
        self._map: ClusterMap | None = None
        self._map_changed = asyncio.Event()
        self._fetching: asyncio.Task[Any] | None = None

    @property
    def shard(self) -> str | None:
        """The shard the map places this node in (None before it joined)."""
        return self._shard

    def install(self) -> None:
        """Hook into the server's lifecycle: join after the store opens, leave on stop."""
        self.server.on_ready.append(self._join)
        self.server.on_stop.append(self._leave)
        self.server.ctx.owns_key = self.check_owner
        self.server.ctx.ring_catch_up = self.catch_up_ring

    def _status(self) -> dict[str, Any]:
        store = self.server.store
        return {
            "lsn": store.last_lsn if store else 0,
            "epoch": store.epoch if store else 0,
            "role": self.server.ctx.role,
        }

    async def _join(self, server: NodeServer) -> None:
        config = server.config
        advertise = os.environ.get(ADVERTISE_ENV) or server.url
        assert advertise is not None
        # Until the first map arrives the node must not act as a primary of anything.
        server.ctx.role = "joining"
        self.link = CoordinatorLink(
            list(config.coordinators),
            str(config.data_dir),
            advertise,
            status=self._status,
            on_change=self._apply,
            shard=config.shard,
            node_id=config.node_id,
        )
        placement = await self.link.start()
        await self._apply(placement, self.link.cluster_map)
        logger.info(
            "joined the cluster as %s of shard %s", placement.role, placement.shard,
            extra=log_fields(node_id=placement.node_id, shard=placement.shard,
                             role=placement.role, epoch=placement.epoch,
                             map_version=placement.map_version),
        )

    async def _leave(self, server: NodeServer) -> None:
        if self.link is not None:
            await self.link.stop()

    async def _apply(self, placement: Placement, cluster_map: ClusterMap) -> None:
        ctx = self.server.ctx
        previous_role = ctx.role
        self._map = cluster_map
        self._shard = placement.shard
        ctx.node_id = placement.node_id
        ctx.ring_version = placement.ring_version
        ctx.role = placement.role
        shard = cluster_map.shards.get(placement.shard) if placement.shard else None
        primary_id = shard.primary if shard else None
        ctx.primary = (
            {"id": primary_id, "url": cluster_map.node_url(primary_id)} if primary_id else None
        )
        if previous_role != ctx.role:
            logger.info(
                "role is now %s", ctx.role,
                extra=log_fields(node_id=placement.node_id, shard=placement.shard,
                                 role=ctx.role, epoch=placement.epoch, previous=previous_role),
            )
        for listener in self.listeners:
            await listener(placement, cluster_map)
        changed, self._map_changed = self._map_changed, asyncio.Event()
        changed.set()

    async def catch_up_ring(self, version: int) -> None:
        """Wait until this node's ring is at least ``version``, at most RING_CATCH_UP_S.

        At a ring flip the client often hears of the new ring first (the old owner answers
        ``STALE_MAP`` naming it, the client fetches it from a coordinator) and reaches the
        new owner before that node's own map watch has delivered the flip. Answering
        ``STALE_MAP`` then sends the client into redirect backoff (10, 20, 40 ms ...) for
        what is a few milliseconds of lag here: a quarter-second stall per client at every
        flip. Waiting for our own map is what the client would do anyway, without the
        round trips. If the watch has not delivered it after RING_FETCH_AFTER_S, the map is
        fetched from a coordinator.
        """
        ctx = self.server.ctx
        if (self.link is None or ctx.ring_version is None or RING_CATCH_UP_S <= 0
                or version - ctx.ring_version > RING_AHEAD_LIMIT):
            return
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch_if_behind(version),
                                                 name="ring-catch-up")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RING_CATCH_UP_S
        while ctx.ring_version is not None and ctx.ring_version < version:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._map_changed.wait(), remaining)
            except TimeoutError:
                return

    async def _fetch_if_behind(self, version: int) -> None:
        """Fetch the map from a coordinator if the watch has not delivered ``version`` soon
        (it normally has: fetching at once would apply the same map twice, concurrently)."""
        assert self.link is not None
        await asyncio.sleep(RING_FETCH_AFTER_S)
        ring_version = self.server.ctx.ring_version
        if ring_version is None or ring_version >= version:
            return
        try:
            await self.link.refresh_map()
        except Exception as exc:  # the watch keeps trying; the wait is bounded anyway
            logger.debug("ring catch-up fetch failed: %r", exc)

    def check_owner(self, key: bytes) -> None:
        """Raise STALE_MAP when the ring gives ``key`` to another shard than this node's."""
        cluster_map = self._map
        if cluster_map is None or self._shard is None or not cluster_map.ring.shards:
            return
        owner = shard_for_key(cluster_map, key)
        if owner != self._shard:
            raise StaleMap(
                f"shard {owner} owns this key, not {self._shard} (ring version "
                f"{cluster_map.ring.version})",
                ring_version=cluster_map.ring.version, owner=owner,
            )

    @property
    def is_primary(self) -> bool:
        return self.server.ctx.role == ROLE_PRIMARY

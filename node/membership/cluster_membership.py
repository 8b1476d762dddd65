"""A node inside a cluster: its place in the map becomes what its operations enforce.

Without ``--coordinator`` a node is the primary of a one-node shard and owns every key. With
it, the node registers through :class:`~shardkv.node.membership.coordinator_link.CoordinatorLink`
and,
at every new map, takes from its placement:

- its role (``primary`` serves writes; a ``replica`` answers writes with ``NOT_PRIMARY``
  naming the primary's id and URL, so a client can go there directly);
- the ring version (a request naming an older ring gets ``STALE_MAP``);
- key ownership: a keyed request for a key the ring gives to another shard gets
  ``STALE_MAP`` too — the client's map is wrong, whatever version it names.

The replication layer listens to the same placement changes through ``listeners`` to follow
a new primary or start serving replicas.
"""

from __future__ import annotations

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


class ClusterMembership:
    """Owns the coordinator link of one node server and applies each map to its context."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.link: CoordinatorLink | None = None
        self.listeners: list[PlacementListener] = []
        self._shard: str | None = None
        self._map: ClusterMap | None = None

    @property
    def shard(self) -> str | None:
        """The shard the map places this node in (None before it joined)."""
        return self._shard

    def install(self) -> None:
        """Hook into the server's lifecycle: join after the store opens, leave on stop."""
        self.server.on_ready.append(self._join)
        self.server.on_stop.append(self._leave)
        self.server.ctx.owns_key = self.check_owner

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

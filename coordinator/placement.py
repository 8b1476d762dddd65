"""Where a node goes: pure, deterministic placement decisions over a cluster map.

These functions run inside the Raft state machine, on every coordinator, for every committed
command, so they must give the same answer everywhere: no clocks, no randomness, no iteration
over unordered sets. Rules:

- A node that already has a place keeps it (a restarted node comes back where it was).
- ``--shard ID`` joins that shard, even past the replication factor (an operator's choice).
- Otherwise the node fills the emptiest replica set below the replication factor, so every
  shard gets a primary before any gets a second replica; among equally empty shards it prefers
  the one whose members share the fewest ``zone``/``host`` labels with it (spread failure
  domains), then the shard that comes first in natural order (s2 before s10).
- When every replica set is full the node stays a spare (``role: none``) and fills the first
  hole a drain or removal opens.
"""

from __future__ import annotations

import re

from shardkv.cluster.cluster_map import NODE_UP, ClusterMap, NodeInfo

# Labels that name a failure domain, most significant first.
SPREAD_LABELS: tuple[str, ...] = ("zone", "host")


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``s2`` before ``s10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def shard_order(cluster_map: ClusterMap) -> list[str]:
    return sorted(cluster_map.shards, key=natural_key)


def _label_conflicts(
    cluster_map: ClusterMap, members: list[str], node: NodeInfo
) -> tuple[int, ...]:
    """Per spread label, how many members share the node's value (zone weighs before host)."""
    counts = []
    for label in SPREAD_LABELS:
        value = node.labels.get(label)
        if value is None:
            counts.append(0)
            continue
        counts.append(
            sum(
                1
                for member in members
                if member in cluster_map.nodes
                and cluster_map.nodes[member].labels.get(label) == value
            )
        )
    return tuple(counts)


def choose_shard(cluster_map: ClusterMap, node: NodeInfo) -> str | None:
    """The shard an unplaced node should join, or None to stay a spare."""
    best: tuple[object, ...] | None = None
    chosen: str | None = None
    for order, shard_id in enumerate(shard_order(cluster_map)):
        shard = cluster_map.shards[shard_id]
        # A shard receiving a migration fills up like any other (it needs its members before
        # the flip); a retiring one takes no one.
        if (shard.state not in ("active", "migrating")
                or len(shard.members) >= cluster_map.replication_factor):
            continue
        score = (len(shard.members), _label_conflicts(cluster_map, shard.members, node), order)
        if best is None or score < best:
            best, chosen = score, shard_id
    return chosen


def spares(cluster_map: ClusterMap) -> list[str]:
    """Up nodes without a shard, in natural id order (the order they fill holes)."""
    return sorted(
        (
            nid
            for nid, info in cluster_map.nodes.items()
            if info.shard is None and info.status == NODE_UP
        ),
        key=natural_key,
    )

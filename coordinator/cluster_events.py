"""Cluster events, derived from two consecutive Raft-applied maps.

Every coordinator applies the same Raft log, so every coordinator sees the same sequence of
maps; diffing each map against the one before gives the same events on every member (the
leader and the followers alike), and a subscriber may follow any coordinator. Each event
names the ``map_version`` that produced it, so events from two coordinators can be matched.
What the map does not hold (heartbeat liveness, which lives only in the leader's memory) is
not an event here: a node is ``down`` when the map says so, the decision the failover made.

The event types and their fields are listed in docs/events.md; ``diff_maps`` is a pure
function so it is tested without a cluster (tests/unit/test_cluster_events.py).
"""

from __future__ import annotations

from typing import Any

from shardkv.cluster.cluster_map import NODE_DOWN, NODE_UP, ClusterMap
from shardkv.cluster.migration_record import MigrationRecord

Event = dict[str, Any]

# Every type diff_maps can produce; the feed's `types=` filter is checked against it.
CLUSTER_EVENT_TYPES = (
    "node.added", "node.removed", "node.up", "node.down", "node.status",
    "shard.added", "shard.removed", "shard.primary", "shard.failover", "shard.members",
    "shard.state",
    "ring.changed", "migration.started", "migration.progress", "migration.state",
    "coordinator.added", "coordinator.removed",
)


def _node_events(before: ClusterMap, after: ClusterMap) -> list[Event]:
    events: list[Event] = []
    for node_id in sorted(after.nodes.keys() - before.nodes.keys()):
        node = after.nodes[node_id]
        events.append({"type": "node.added", "node": node_id, "url": node.url,
                       "shard": node.shard, "role": node.role, "status": node.status})
    for node_id in sorted(before.nodes.keys() - after.nodes.keys()):
        events.append({"type": "node.removed", "node": node_id,
                       "shard": before.nodes[node_id].shard})
    for node_id in sorted(before.nodes.keys() & after.nodes.keys()):
        old, new = before.nodes[node_id], after.nodes[node_id]
        if old.status != new.status:
            kind = {NODE_UP: "node.up", NODE_DOWN: "node.down"}.get(new.status, "node.status")
            events.append({"type": kind, "node": node_id, "status": new.status,
                           "before": old.status, "shard": new.shard})
    return events


def _shard_events(before: ClusterMap, after: ClusterMap) -> list[Event]:
    events: list[Event] = []
    for shard_id in sorted(after.shards.keys() - before.shards.keys()):
        shard = after.shards[shard_id]
        events.append({"type": "shard.added", "shard": shard_id, "primary": shard.primary,
                       "members": list(shard.members), "epoch": shard.epoch,
                       "state": shard.state})
    for shard_id in sorted(before.shards.keys() - after.shards.keys()):
        events.append({"type": "shard.removed", "shard": shard_id})
    for shard_id in sorted(before.shards.keys() & after.shards.keys()):
        old, new = before.shards[shard_id], after.shards[shard_id]
        if old.primary != new.primary or old.epoch != new.epoch:
            # A first primary (or none left) is an assignment; a change between two nodes
            # (or a new epoch on the same one) is a failover.
            kind = "shard.failover" if old.primary and new.primary else "shard.primary"
            events.append({"type": kind, "shard": shard_id,
                           "old_primary": old.primary, "new_primary": new.primary,
                           "epoch": new.epoch, "old_epoch": old.epoch})
        if old.members != new.members:
            events.append({"type": "shard.members", "shard": shard_id,
                           "members": list(new.members), "before": list(old.members),
                           "added": sorted(set(new.members) - set(old.members)),
                           "removed": sorted(set(old.members) - set(new.members))})
        if old.state != new.state:
            events.append({"type": "shard.state", "shard": shard_id, "state": new.state,
                           "before": old.state})
    return events


def _ring_events(before: ClusterMap, after: ClusterMap) -> list[Event]:
    if before.ring.version == after.ring.version:
        return []
    return [{"type": "ring.changed", "ring_version": after.ring.version,
             "before": before.ring.version, "shards": dict(after.ring.shards),
             "before_shards": dict(before.ring.shards)}]


def _migration_fields(record: MigrationRecord) -> Event:
    return {"migration": record.id, "kind": record.kind, "shard": record.target,
            "sources": list(record.sources), "state": record.state,
            "keys_moved": record.keys_moved, "keys_total": record.keys_total,
            "bytes_moved": record.bytes_moved, "rate_keys_s": record.rate_keys_s,
            "error": record.error}


def _migration_events(before: ClusterMap, after: ClusterMap) -> list[Event]:
    old, new = before.migration, after.migration
    if new is None:
        # The running one finished: its final record is in the history.
        if old is not None:
            done = after.find_migration(old.id)
            if done is not None and done.state != old.state:
                return [{"type": "migration.state", **_migration_fields(done),
                         "before": old.state}]
        return []
    if old is None or old.id != new.id:
        return [{"type": "migration.started", **_migration_fields(new)}]
    if old.state != new.state:
        return [{"type": "migration.state", **_migration_fields(new), "before": old.state}]
    if (old.keys_moved, old.bytes_moved, old.keys_total) != (
            new.keys_moved, new.bytes_moved, new.keys_total):
        return [{"type": "migration.progress", **_migration_fields(new)}]
    return []


def _coordinator_events(before: ClusterMap, after: ClusterMap) -> list[Event]:
    events: list[Event] = []
    for cid in sorted(after.coordinators.keys() - before.coordinators.keys()):
        events.append({"type": "coordinator.added", "coordinator": cid,
                       "url": after.coordinators[cid].url})
    for cid in sorted(before.coordinators.keys() - after.coordinators.keys()):
        events.append({"type": "coordinator.removed", "coordinator": cid})
    return events


def diff_maps(before: ClusterMap, after: ClusterMap, at: float) -> list[Event]:
    """The cluster events between two applied maps, each stamped with ``after``'s version
    and ``at`` (Unix seconds on this coordinator). A first map (``before.version == 0``)
    yields nothing: the feed's ``cluster.snapshot`` describes the starting state."""
    if before.version == 0 or after.version <= before.version:
        return []
    events = (_node_events(before, after) + _shard_events(before, after)
              + _ring_events(before, after) + _migration_events(before, after)
              + _coordinator_events(before, after))
    for event in events:
        event["map_version"] = after.version
        event["time"] = round(at, 3)
    return events


def snapshot_event(cluster_map: ClusterMap, leader: str | None, at: float) -> Event:
    """The whole current state, sent first on every feed (and what the dashboard draws)."""
    served = cluster_map.to_dict()
    served["leader"] = leader
    return {"type": "cluster.snapshot", "map_version": cluster_map.version,
            "time": round(at, 3), "map": served}

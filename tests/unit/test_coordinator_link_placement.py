"""What a node reads about itself from a map (node/membership/coordinator_link.py)."""

from __future__ import annotations

from shardkv.cluster.cluster_map import ClusterMap, NodeInfo, RingSpec, ShardInfo
from shardkv.node.membership.coordinator_link import Placement


def test_placement_reads_role_epoch_and_ring_version() -> None:
    cluster_map = ClusterMap(
        version=9,
        ring=RingSpec(version=4, shards={"s1": 1}),
        shards={"s1": ShardInfo(epoch=7, primary="n2", members=["n2", "n1"])},
        nodes={"n1": NodeInfo(url="http://a:1", shard="s1", role="replica"),
               "n2": NodeInfo(url="http://a:2", shard="s1", role="primary"),
               "n3": NodeInfo(url="http://a:3", status="draining")},
    )
    assert Placement.from_map("n2", cluster_map) == Placement(
        node_id="n2", shard="s1", role="primary", epoch=7, ring_version=4, map_version=9,
        status="up")
    assert Placement.from_map("n1", cluster_map).role == "replica"
    spare = Placement.from_map("n3", cluster_map)
    assert (spare.shard, spare.role, spare.epoch, spare.status) == (None, "none", 0, "draining")
    gone = Placement.from_map("n9", cluster_map)
    assert (gone.status, gone.role) == ("removed", "none")

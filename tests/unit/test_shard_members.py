"""New members of a local cluster get fresh ids: a retired member left the plan but keeps its
data directory (and its id in the map, parked), so its id is never handed out again."""

from __future__ import annotations

from pathlib import Path

from shardkv.cluster.launcher import ClusterPlan
from shardkv.cluster.shard_members import plan_shard_members


def test_retired_ids_are_not_reused(tmp_path: Path) -> None:
    plan = ClusterPlan.new(tmp_path, shards=2, replicas=1, coordinators=1)
    assert [n.id for n in plan.nodes] == ["n1", "n2"]
    (tmp_path / "nodes" / "n3").mkdir(parents=True)  # a member of a removed shard
    specs = plan_shard_members(plan, tmp_path, "s3", 2)
    assert [s.id for s in specs] == ["n4", "n5"]
    assert all(s.shard == "s3" and Path(s.data_dir).name == s.id for s in specs)

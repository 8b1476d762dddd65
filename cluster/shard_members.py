"""Start and stop the members of one shard on a local cluster (``shardkv shard add`` on a
cluster from ``shardkv up``): new node processes, recorded in the plan and ``cluster.json``
like the ones ``shardkv up`` started."""

from __future__ import annotations

import json
from pathlib import Path

from shardkv.cluster.launcher import (
    ClusterPlan,
    LocalCluster,
    ProcessSpec,
    write_json_atomically,
)
from shardkv.cluster.local_processes import free_port


def _next_node_number(plan: ClusterPlan) -> int:
    numbers = [int(n.id[1:]) for n in plan.nodes if n.id[1:].isdigit()]
    return max(numbers, default=0) + 1


def plan_shard_members(plan: ClusterPlan, directory: Path, shard: str,
                       count: int) -> list[ProcessSpec]:
    """Specs for ``count`` new members of ``shard`` (ids after the highest, free ports)."""
    taken = {p.port for p in plan.processes} | {
        p.raft_port for p in plan.coordinators if p.raft_port}
    first = _next_node_number(plan)
    specs = []
    for i in range(count):
        port = free_port(taken=taken)
        node_id = f"n{first + i}"
        specs.append(ProcessSpec("node", node_id, port, str(directory / "nodes" / node_id),
                                 shard=shard))
    return specs


def start_shard_members(cluster: LocalCluster, shard: str,
                        count: int | None = None) -> list[ProcessSpec]:
    """Start the members of ``shard`` (the cluster's replication factor unless ``count``)
    and record them in the plan and ``cluster.json``."""
    plan = cluster.plan
    specs = plan_shard_members(plan, cluster.directory, shard, count or plan.replicas)
    for spec in specs:
        plan.nodes.append(spec)
        cluster.start_process(spec)
    plan.save(cluster.directory / "launcher.json")
    _merge_cluster_file(cluster, specs)
    return specs


def _merge_cluster_file(cluster: LocalCluster, specs: list[ProcessSpec]) -> None:
    """Add the new members to ``cluster.json``, keeping the entries (and pids) of the
    processes another launcher started, so ``shardkv down`` stops them all."""
    path = cluster.cluster_file
    described = json.loads(path.read_text()) if path.is_file() else cluster.describe()
    known = {entry["id"] for entry in described.get("nodes", [])}
    for spec in specs:
        if spec.id in known:
            continue
        proc = cluster.procs.get(spec.id)
        described.setdefault("nodes", []).append({
            "id": spec.id, "url": spec.url, "pid": proc.pid if proc else None,
            "data_dir": spec.data_dir})
    write_json_atomically(path, described)

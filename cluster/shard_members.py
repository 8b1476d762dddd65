"""Start and stop the members of one shard on a local cluster (``shardkv shard add`` and
``shardkv shard remove`` on a cluster from ``shardkv up``): new node processes, recorded in
the plan and ``cluster.json`` like the ones ``shardkv up`` started; retired ones stopped and
taken out of both."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from shardkv.cluster.launcher import (
    ClusterPlan,
    LocalCluster,
    ProcessSpec,
    write_json_atomically,
)
from shardkv.cluster.launcher_control import ControlError, launcher_pid, request
from shardkv.cluster.local_processes import (
    free_port,
    is_shardkv_process,
    pid_alive,
    terminate_pids,
)
from shardkv.cluster.retired_watches import RETIRE_GRACE_S, wait_watches_closed


def _next_node_number(plan: ClusterPlan, directory: Path) -> int:
    """After every id in the plan and every node data directory: a retired member leaves
    the plan but keeps its directory and its id in the map (parked as draining), so its id
    is never given to a new member."""
    numbers = [int(n.id[1:]) for n in plan.nodes if n.id[1:].isdigit()]
    nodes_dir = directory / "nodes"
    if nodes_dir.is_dir():
        numbers += [int(d.name[1:]) for d in nodes_dir.iterdir()
                    if d.name.startswith("n") and d.name[1:].isdigit()]
    return max(numbers, default=0) + 1


def plan_shard_members(plan: ClusterPlan, directory: Path, shard: str,
                       count: int) -> list[ProcessSpec]:
    """Specs for ``count`` new members of ``shard`` (ids after the highest, free ports)."""
    taken = {p.port for p in plan.processes} | {
        p.raft_port for p in plan.coordinators if p.raft_port}
    first = _next_node_number(plan, directory)
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


def retire_members(directory: Path, node_ids: list[str], *,
                   watch_grace_s: float = RETIRE_GRACE_S) -> list[str]:
    """Stop the members a shard removal retired and drop them from ``launcher.json`` and
    ``cluster.json`` (a later ``shardkv up`` must not start them again). A launcher that
    runs the cluster stops the processes it owns (it would otherwise restart them); the
    others (started by ``shard add`` from the command line) are signalled by pid. Returns
    the ids it stopped or found stopped."""
    wanted = set(node_ids)
    plan_file = directory / "launcher.json"
    if not wanted or not plan_file.is_file():
        return []
    plan = ClusterPlan.load(plan_file)
    known = [n.id for n in plan.nodes if n.id in wanted]
    # A watch still catching up with the removed shard's writes reads them from these
    # members (cluster/retired_watches.py): let it finish, within the grace period.
    wait_watches_closed([n.url for n in plan.nodes if n.id in wanted], grace_s=watch_grace_s)
    cluster_file = directory / "cluster.json"
    described = json.loads(cluster_file.read_text()) if cluster_file.is_file() else {}
    pids = {e["id"]: e.get("pid") for e in described.get("nodes", [])}
    leftover: list[int] = []
    for node_id in known:
        if launcher_pid(directory) is not None:
            with contextlib.suppress(ControlError):
                if request(directory, "stop", node_id).get("ok"):
                    continue
        pid = pids.get(node_id)
        if isinstance(pid, int) and pid_alive(pid) and is_shardkv_process(pid):
            leftover.append(pid)
    terminate_pids(leftover)
    plan.nodes = [n for n in plan.nodes if n.id not in wanted]
    plan.save(plan_file)
    if described:
        described["nodes"] = [e for e in described.get("nodes", []) if e["id"] not in wanted]
        write_json_atomically(cluster_file, described)
    return known

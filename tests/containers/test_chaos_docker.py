"""``shardkv chaos run --docker``: a chaos scenario on containers, every fault kind of the
container mode in one run.

The cluster (a coordinator and one shard of three nodes) runs in containers of the image on a
network of its own; the workload runs on the host. The faults cover each way the container
mode injects one: a SIGKILL of a container's process and ``docker start`` (kill-node), a
``docker network disconnect``/``connect`` (partition-node), iptables rules inside the
containers' network namespaces (partition-primary: the primary cut off from its replicas
only), and the node's test clock together with such a rule (clock-drift-isolated-primary). No
anomaly is allowed, every fault must have started, and nothing of the run may be left behind
(containers, network).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from shardkv.chaos.history import load_history
from shardkv.chaos.nemesis.container_network import container_network_available
from shardkv.chaos.nemesis.schedule import FaultSpec
from shardkv.chaos.runner import RunOptions, run_scenario
from shardkv.chaos.scenarios import ONE_SHARD, Scenario
from shardkv.chaos.workloads.mix import WorkloadMix

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

FAULTS = ("kill-node", "partition-node", "partition-primary", "clock-drift-isolated-primary")
SEED = 6  # its schedule starts each of FAULTS at least once in 56 s


def _docker_ps(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def _docker_networks(label: str) -> list[str]:
    out = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


async def test_docker_chaos_run_has_no_anomaly(docker_client: Any, shardkv_image: str,
                                               tmp_path: Path) -> None:
    ok, why = await container_network_available()
    if not ok:
        pytest.skip(f"container partitions cannot be made here: {why}")
    if os.geteuid() != 0:
        pytest.skip("the container mode needs root (data directories of the image's user)")
    scenario = Scenario(
        "docker-mix", "every container fault kind",
        (FaultSpec("kill-node"), FaultSpec("partition-node"), FaultSpec("partition-primary"),
         FaultSpec("clock-drift-isolated-primary", params={"clock": {"rate": 0.96}})),
        shape=ONE_SHARD, mix=WorkloadMix({"register": 3, "append": 1, "eventual": 2}),
        duration_s=56.0, fault_s=(3.0, 5.0), quiet_s=(2.0, 3.0))
    label = "io.shardkv.chaos-run"
    before = set(_docker_ps(label)), set(_docker_networks(label))
    out = tmp_path / "run"
    report = await run_scenario(RunOptions(scenario, SEED, out, docker_image=shardkv_image))
    summary = (out / "summary.txt").read_text()
    reproduce = (f"shardkv chaos run --docker --scenario <as in {__file__}> --seed {SEED} "
                 f"--out DIR")
    assert report.exit_status == 0, f"{summary}\nreproduce: {reproduce}"
    history = load_history(out / "history.jsonl")
    started = {e.fault for e in history.nemesis if e.action == "start"}
    assert started == set(FAULTS), summary
    assert report.meta["runtime"] == "docker"
    ok_ops = sum(1 for op in history.operations() if op.type == "ok")
    assert ok_ops > 500, summary
    # The network faults really cut: the disconnect and the namespace rules are recorded.
    starts = {e.fault: e.detail for e in history.nemesis if e.action == "start"}
    assert starts["partition-node"]["disconnected"], starts["partition-node"]
    assert starts["partition-primary"]["dropped"], starts["partition-primary"]
    assert starts["clock-drift-isolated-primary"]["clock"]["skews"], starts
    # Every member's log was kept, and nothing of the run is left in Docker.
    logs = sorted(p.name for p in (out / "cluster" / "logs").iterdir())
    assert logs == ["c1.log", "n1.log", "n2.log", "n3.log"], logs
    assert (set(_docker_ps(label)), set(_docker_networks(label))) == before

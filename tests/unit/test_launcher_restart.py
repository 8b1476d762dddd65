"""LocalCluster.restart of a process that is still exiting (the chaos harness's kill nemesis
restarts right after a SIGKILL): it waits for the exit instead of refusing, and still refuses a
process that really runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import shardkv.cluster.launcher as launcher
from shardkv.cluster.launcher import ClusterPlan, LaunchError, LocalCluster


def _cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalCluster, list[str]]:
    plan = ClusterPlan.new(tmp_path, shards=1, replicas=1, coordinators=1)
    cluster = LocalCluster(tmp_path, plan)
    started: list[str] = []

    def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        started.append(argv[argv.index("--id") + 1])
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(launcher, "spawn_logged", spawn)
    monkeypatch.setattr(launcher, "wait_ports_free", lambda ports: [])
    return cluster, started


def test_a_process_still_exiting_is_waited_for(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, started = _cluster(tmp_path, monkeypatch)
    node = cluster.plan.nodes[0]
    # Stands for a killed node whose last thread is still in a syscall: gone in 0.5 s.
    cluster.procs[node.id] = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.5)"])
    cluster.restart(node.id)
    assert started == [node.id]
    cluster.procs[node.id].wait(10)


def test_a_running_process_is_not_started_twice(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, started = _cluster(tmp_path, monkeypatch)
    monkeypatch.setattr(launcher, "EXIT_WAIT_S", 0.2)
    node = cluster.plan.nodes[0]
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    cluster.procs[node.id] = running
    try:
        with pytest.raises(LaunchError, match="still running"):
            cluster.restart(node.id)
        assert started == []
    finally:
        running.kill()
        running.wait()

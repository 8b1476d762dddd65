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


def test_the_harness_counts_a_dying_process_as_exited() -> None:
    """A killed node whose leader is a zombie but which cannot be reaped yet (a thread still in
    a syscall) makes ``poll`` answer None: ``exited`` must wait for it instead of reading that
    as "running" (the failpoint nemesis then left a crashed node down for the rest of a run)."""
    import os
    import time
    from types import SimpleNamespace

    from shardkv.chaos.cluster_under_test import ClusterUnderTest
    from shardkv.chaos.nemesis.process import process_state

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while process_state(pid) != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    waited: list[float] = []

    class Dying:
        """What Popen says of such a process: no status yet, until waited for."""

        def __init__(self) -> None:
            self.pid = pid

        def poll(self) -> None:
            return None

        def wait(self, timeout: float) -> int:
            waited.append(timeout)
            os.waitpid(pid, 0)
            return 137

    cut = object.__new__(ClusterUnderTest)
    cut.launcher = SimpleNamespace(procs={"n1": Dying()})  # type: ignore[assignment]
    assert cut.exited("n1") == 137
    assert waited and waited[0] > 0

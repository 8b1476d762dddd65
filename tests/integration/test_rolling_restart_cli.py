"""`shardkv restart --rolling` on a cluster started with `shardkv up --detach` (the launcher
stops and starts each process on request, in the command's order), then `shardkv down` stops
every process, the restarted ones included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from shardkv.cluster.local_processes import pid_alive

pytestmark = pytest.mark.integration


def shardkv(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_rolling_restart_of_a_detached_cluster_then_down(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    up = shardkv("up", "--dir", str(directory), "--shards", "1", "--replicas", "3",
                 "--coordinators", "3", "--fsync", "never", "--detach", "--json")
    assert up.returncode == 0, up.stderr
    before = json.loads((directory / "cluster.json").read_text())
    try:
        put = shardkv("put", "--coordinator", before["coordinators"][0]["url"], "k", "v1")
        rolled = shardkv("restart", "--rolling", "--dir", str(directory), "--json")
        assert rolled.returncode == 0, rolled.stderr
        report = json.loads(rolled.stdout)
        kinds = [s["kind"] for s in report["steps"]]
        assert kinds == ["replica", "replica", "primary", "coordinator", "coordinator",
                         "coordinator leader"]
        primary_step = report["steps"][2]
        assert primary_step["new_primary"] not in (None, primary_step["process"])
        # `shardkv up` is secured: the handoff request was signed as the node itself.
        log = (directory / "logs" / f"{primary_step['process']}.log").read_text()
        assert "handed the primary role over" in log, log[-2000:]
        assert "shard s1: replicas" in rolled.stderr and "rolling restart done" in rolled.stderr
        after = json.loads((directory / "cluster.json").read_text())
        old_pids = {e["id"]: e["pid"] for e in before["nodes"] + before["coordinators"]}
        new_pids = {e["id"]: e["pid"] for e in after["nodes"] + after["coordinators"]}
        assert all(new_pids[i] != old_pids[i] for i in old_pids), (old_pids, new_pids)
        assert put.returncode == 0, put.stderr
        got = shardkv("get", "--coordinator", after["coordinators"][0]["url"], "k")
        assert got.returncode == 0 and "v1" in got.stdout, got
    finally:
        down = shardkv("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert not [p for p in new_pids.values() if pid_alive(p)]

"""`shardkv up --detach`, the data commands against the cluster it started, `shardkv down`
leaving no process behind; and the launcher's supervision (restart of a killed node)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from shardkv.cluster.launcher import ClusterPlan, LocalCluster
from shardkv.cluster.local_processes import pid_alive, port_is_free, stop_described

pytestmark = pytest.mark.integration


def shardkv(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHARDKV_COORDINATORS"}
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_up_detach_commands_and_down(tmp_path: Path) -> None:
    directory = tmp_path / "cl"
    up = shardkv("up", "--dir", str(directory), "--shards", "2", "--replicas", "3",
                 "--coordinators", "3", "--fsync", "never", "--detach")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert "metrics" in up.stdout and "SHARDKV_COORDINATORS=" in up.stdout
        dashboard = next(line for line in up.stdout.splitlines()
                         if line.startswith("dashboard: "))
        page = urllib.request.urlopen(dashboard.split()[1], timeout=10)
        assert page.status == 200 and b"shardkv" in page.read()
        described = json.loads((directory / "cluster.json").read_text())
        assert sorted(described) == ["coordinators", "nodes"]
        assert len(described["coordinators"]) == 3 and len(described["nodes"]) == 6
        for entry in described["coordinators"]:
            assert sorted(entry) == ["id", "pid", "state", "url"] and pid_alive(entry["pid"])
        for entry in described["nodes"]:
            assert sorted(entry) == ["data_dir", "id", "pid", "state", "url"]
            assert entry["state"] == "running"
            assert pid_alive(entry["pid"]) and Path(entry["data_dir"]).is_dir()
        pids = [e["pid"] for e in described["coordinators"] + described["nodes"]]
        launcher_pid = int((directory / "launcher.pid").read_text())

        # A second `up` on the same directory refuses instead of clashing.
        again = shardkv("up", "--dir", str(directory), "--detach")
        assert again.returncode == 1 and "already running" in again.stderr

        at = ("--dir", str(directory))
        assert shardkv("put", *at, "k1", "v1").returncode == 0
        assert shardkv("get", *at, "k1").stdout == "v1\n"
        many = [f"key{i}=val{i}" for i in range(20)]
        assert shardkv("mput", *at, *many).returncode == 0
        got = json.loads(shardkv("mget", *at, "key0", "key19", "--json").stdout)
        assert [g["value"] for g in got] == ["val0", "val19"]
        assert shardkv("incr", *at, "ctr", "--by", "5").stdout == "5\n"
        scanned = json.loads(shardkv("scan", *at, "--prefix", "key", "--json").stdout)
        assert [r["key"] for r in scanned] == sorted(f"key{i}" for i in range(20))
        assert shardkv("del", *at, "k1").stdout == "deleted\n"
        status = json.loads(shardkv("status", *at, "--json").stdout)
        assert status["healthy"] and len(status["shards"]) == 2
        assert all(len(s["members"]) == 3 for s in status["shards"])
        table = shardkv("status", *at).stdout
        assert "SHARD" in table and "healthy" in table
    finally:
        down = shardkv("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in [*pids, launcher_pid]):
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in [*pids, launcher_pid])
    assert not (directory / "cluster.json").exists()
    assert shardkv("down", "--dir", str(directory)).stdout.startswith("nothing running")


def test_supervise_restarts_a_dead_node(tmp_path: Path) -> None:
    plan = ClusterPlan.new(tmp_path, shards=1, replicas=1, coordinators=1, fsync="never")
    cluster = LocalCluster(tmp_path, plan)
    try:
        cluster.start()
        cluster.wait_ready(60)
        node = plan.nodes[0]
        first = cluster.procs[node.id]
        first.kill()
        first.wait()
        assert cluster.dead() == [node.id]
        assert cluster.restart_dead() == [node.id]
        assert cluster.procs[node.id].pid != first.pid
        cluster.wait_ready(60)
        described = json.loads(cluster.cluster_file.read_text())
        assert described["nodes"][0]["pid"] == cluster.procs[node.id].pid
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs.values())


def test_the_plan_and_cluster_json_shape(tmp_path: Path) -> None:
    plan = ClusterPlan.new(tmp_path, shards=2, replicas=3, coordinators=3)
    assert [c.id for c in plan.coordinators] == ["c1", "c2", "c3"]
    assert [(n.id, n.shard) for n in plan.nodes] == [
        ("n1", "s1"), ("n2", "s1"), ("n3", "s1"), ("n4", "s2"), ("n5", "s2"), ("n6", "s2")]
    ports = [p for s in plan.processes for p in (s.port, s.raft_port) if p is not None]
    assert len(set(ports)) == len(ports) == 12  # 3 x (http, raft) + 6 nodes
    argv = plan.argv(plan.coordinators[0])
    assert argv[argv.index("--peers") + 1] == ",".join(
        f"{c.id}=127.0.0.1:{c.raft_port}" for c in plan.coordinators[1:])
    assert argv[argv.index("--init-shards") + 1] == "2"
    node_argv = plan.argv(plan.nodes[4])
    assert node_argv[node_argv.index("--shard") + 1] == "s2"
    assert node_argv[node_argv.index("--coordinator") + 1] == ",".join(plan.coordinator_urls())
    plan.save(tmp_path / "launcher.json")
    assert ClusterPlan.load(tmp_path / "launcher.json") == plan
    described = LocalCluster(tmp_path, plan).describe()
    assert sorted(described) == ["coordinators", "nodes"]
    assert sorted(described["nodes"][0]) == ["data_dir", "id", "pid", "state", "url"]


def test_down_never_signals_a_process_that_is_not_ours(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "cluster.json").write_text(json.dumps(
            {"coordinators": [{"id": "c1", "url": "http://127.0.0.1:1", "pid": stranger.pid}],
             "nodes": []}))
        assert stop_described(tmp_path, grace=0.5) == []
        assert stranger.poll() is None  # a recycled pid is left alone
        assert not (tmp_path / "cluster.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_up_right_after_down_three_times(tmp_path: Path) -> None:
    """`down` then `up` with no wait, three times (each round after the first meets the
    previous round's sockets in TIME-WAIT; five rounds found nothing three did not): `down`
    returns once every process has exited and its ports can be bound, and `up` checks ports
    as the servers bind them (TIME-WAIT is no obstacle). A second `up` on a running cluster
    refuses, once, saying how to stop it."""
    directory = tmp_path / "cl"
    at = ("--dir", str(directory))
    shape = ("--shards", "1", "--replicas", "3", "--coordinators", "1", "--fsync", "never")
    try:
        for round_ in range(3):
            up = shardkv("up", *at, *shape, "--detach")
            assert up.returncode == 0, f"round {round_}: {up.stderr}{up.stdout}"
            assert shardkv("put", *at, "k", f"v{round_}").returncode == 0
            assert shardkv("get", *at, "k").stdout == f"v{round_}\n"
            again = shardkv("up", *at, *shape, "--detach")
            assert again.returncode == 1
            assert again.stderr.count("already running") == 1, again.stderr
            plan = json.loads((directory / "launcher.json").read_text())
            down = shardkv("down", *at)
            assert down.returncode == 0 and "ports released" in down.stdout, down.stderr
            ports = [e["port"] for e in plan["coordinators"] + plan["nodes"]]
            assert all(port_is_free(p) for p in ports)
    finally:
        shardkv("down", *at)


def test_a_failed_up_says_this_runs_reason_once(tmp_path: Path) -> None:
    directory = tmp_path / "cl"
    at = ("--dir", str(directory))
    shape = ("--shards", "1", "--replicas", "1", "--coordinators", "1", "--fsync", "never")
    assert shardkv("up", *at, *shape, "--detach").returncode == 0
    assert shardkv("down", *at).returncode == 0
    plan = json.loads((directory / "launcher.json").read_text())
    # Another program listens on the node's port: the next `up` must say exactly that.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", plan["nodes"][0]["port"]))
    squatter.listen()
    try:
        up = shardkv("up", *at, *shape, "--detach")
    finally:
        squatter.close()
        shardkv("down", *at)
    assert up.returncode == 1
    assert up.stderr.count("ports in use by another program") == 1, up.stderr
    assert f"n1:{plan['nodes'][0]['port']}" in up.stderr
    assert str(directory / "logs" / "launcher.log") in up.stderr
    assert "exited" not in up.stderr  # nothing from the previous run's log


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_foreground_up_supervises_by_default(tmp_path: Path) -> None:
    """`shardkv up` in the foreground restarts a node that dies, unless --no-supervise."""
    directory = tmp_path / "cl"
    env = {k: v for k, v in os.environ.items() if k != "SHARDKV_COORDINATORS"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "shardkv.cluster.cli", "up", "--dir", str(directory),
         "--shards", "1", "--replicas", "1", "--coordinators", "1", "--fsync", "never"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        # Ctrl-C is what this test sends: a suite started in the background by a shell
        # (`... &`) inherits SIGINT ignored, and the launcher would never see it.
        preexec_fn=_sigint_default)
    try:
        assert launcher.stdout is not None
        lines = []
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("supervising"):
                break
        assert lines and lines[-1].startswith("supervising"), "".join(lines)
        first = json.loads((directory / "cluster.json").read_text())["nodes"][0]["pid"]
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        pid = first
        while pid == first and time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(ValueError, OSError):
                pid = json.loads((directory / "cluster.json").read_text())["nodes"][0]["pid"]
        assert pid != first and pid_alive(pid)
        assert launcher.stdout.readline().startswith("restarted n1")
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(60)
    assert launcher.returncode == 0
    assert not (directory / "cluster.json").exists()

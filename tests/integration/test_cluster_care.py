"""A local cluster looked after through the CLI, as a user types it: restart a node by id,
read why a shard is unavailable when two of its three members are down, kill the primary
the demo finds (`shardkv primary KEY --pid`) and see the failover. One detached cluster serves
the module; every test leaves it whole again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shardkv.client import SyncClient
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.local_processes import pid_alive

pytestmark = pytest.mark.integration


def shardkv(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHARDKV_COORDINATORS"}
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = str(tmp_path_factory.mktemp("care") / "cl")
    up = shardkv("up", "--dir", directory, "--shards", "2", "--replicas", "3",
                 "--coordinators", "3", "--fsync", "never", "--detach")
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield directory
    finally:
        shardkv("down", "--dir", directory)


def described(directory: str, process_id: str) -> dict[str, Any]:
    data = json.loads((Path(directory) / "cluster.json").read_text())
    return next(e for e in data["coordinators"] + data["nodes"] if e["id"] == process_id)


def status(directory: str) -> dict[str, Any]:
    return json.loads(shardkv("status", "--dir", directory, "--json").stdout)


def assert_consistent(st: dict[str, Any]) -> None:
    """`status --json` never contradicts itself."""
    down = []
    for shard in st["shards"]:
        for m in shard["members"]:
            assert (m["status"] == "up") <= (m["health"] == "ok"), m
            if m["health"] != "ok":
                assert m["status"] == "down", m
                down.append(m["id"])
        assert (shard["reason"] is None) == (shard["available"] and all(
            m["health"] == "ok" for m in shard["members"])), shard
    assert sorted(st["degraded"]) == sorted(down)
    assert st["available"] == all(s["available"] for s in st["shards"])
    assert st["healthy"] == (st["available"] and not st["degraded"])
    assert (not st["healthy"]) == bool(st["problems"])


def wait_status(directory: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    st = status(directory)
    while not predicate(st) and time.monotonic() < deadline:
        time.sleep(0.3)
        st = status(directory)
    assert predicate(st), json.dumps(st, indent=1)
    return st


def shard_of(st: dict[str, Any], shard_id: str) -> dict[str, Any]:
    return next(s for s in st["shards"] if s["shard"] == shard_id)


def test_restart_a_node_by_id(cluster_dir: str) -> None:
    at = ("--dir", cluster_dir)
    before = described(cluster_dir, "n2")
    stop = shardkv("node", "stop", "n2", *at)
    assert stop.returncode == 0 and "stopped node n2" in stop.stdout, stop.stderr
    assert not pid_alive(before["pid"])
    entry = described(cluster_dir, "n2")
    assert entry["state"] == "stopped" and entry["pid"] is None
    st = status(cluster_dir)
    assert_consistent(st)
    assert "n2" in st["degraded"] and not st["healthy"] and st["available"]

    start = shardkv("node", "start", "n2", *at)
    assert start.returncode == 0 and "started node n2" in start.stdout, start.stderr
    started = described(cluster_dir, "n2")
    assert started["state"] == "running" and pid_alive(started["pid"])

    restart = shardkv("node", "restart", "n2", *at)
    assert restart.returncode == 0, restart.stderr
    assert described(cluster_dir, "n2")["pid"] != started["pid"]
    assert_consistent(wait_status(cluster_dir, lambda s: s["healthy"]))

    coordinator = shardkv("coordinator", "restart", "c3", *at)
    assert coordinator.returncode == 0 and "restarted coordinator c3" in coordinator.stdout
    wrong = shardkv("node", "stop", "c1", *at)
    assert wrong.returncode == 2 and "not a node id" in wrong.stderr
    unknown = shardkv("node", "stop", "n99", *at)
    assert unknown.returncode == 1 and "no process 'n99'" in unknown.stderr


def test_status_explains_two_of_three_down(cluster_dir: str) -> None:
    at = ("--dir", cluster_dir)
    assert shardkv("put", *at, "probe", "x").returncode == 0
    shard_id = json.loads(shardkv("primary", "probe", *at, "--json").stdout)["shard"]
    shard = shard_of(wait_status(cluster_dir, lambda s: s["healthy"]), shard_id)
    members = [m["id"] for m in shard["members"]]
    gone = [shard["primary"], next(m for m in members if m != shard["primary"])]
    try:
        # SIGKILL, not `node stop`: a stopped primary hands its role to a live replica first
        # (issue 20), and this test is about a shard left without one.
        for node in gone:
            os.kill(described(cluster_dir, node)["pid"], signal.SIGKILL)
        wait_status(cluster_dir, lambda s: sum(
            m["id"] in gone and m["health"] != "ok" for m in shard_of(s, shard_id)["members"])
            == 2)
        text = shardkv("status", *at)
        assert text.returncode == 1
        first, second = [m for m in members if m in gone]  # named in the map's member order
        assert (f"{shard_id}: no primary; 1 of 3 members alive; failover needs a majority (2): "
                f"start {first} or {second} (`shardkv node start {first}`)") in text.stdout
        st = status(cluster_dir)
        assert_consistent(st)
        assert not st["available"] and not shard_of(st, shard_id)["available"]
        read = shardkv("get", *at, "probe", "--timeout", "2")
        assert read.returncode == 1
        assert f"UNAVAILABLE: {shard_id}: no primary" in read.stderr, read.stderr
        # The library names the shard and its primary too, not only a socket error.
        urls = [c["url"] for c in json.loads(
            (Path(cluster_dir) / "cluster.json").read_text())["coordinators"]]
        with SyncClient(urls, timeout=2) as kv, pytest.raises(Unavailable) as caught:
            kv.get("probe")
        assert caught.value.details.get("shard") == shard_id
        assert f"shard {shard_id}: its primary {gone[0]}" in caught.value.message
    finally:
        for node in gone:
            shardkv("node", "start", node, *at)
    assert_consistent(wait_status(cluster_dir, lambda s: s["healthy"]))


def test_kill_the_primary_the_demo_finds_and_see_the_failover(cluster_dir: str) -> None:
    at = ("--dir", cluster_dir)
    assert shardkv("put", *at, "user:1", "alice").returncode == 0
    found = json.loads(shardkv("primary", "user:1", *at, "--json").stdout)
    before = shard_of(status(cluster_dir), found["shard"])
    pid = int(shardkv("primary", "user:1", *at, "--pid").stdout)
    assert pid == found["pid"]
    os.kill(pid, signal.SIGKILL)
    try:
        after = wait_status(cluster_dir, lambda s: shard_of(s, found["shard"])["primary"]
                            not in (None, found["primary"])
                            and shard_of(s, found["shard"])["available"])
        shard = shard_of(after, found["shard"])
        assert shard["epoch"] > before["epoch"]
        assert shard["reason"] and found["primary"] in shard["reason"]  # one member down
        assert_consistent(after)
        assert shardkv("get", *at, "user:1").stdout == "alice\n"
        assert shardkv("put", *at, "user:2", "bob").returncode == 0
        assert shardkv("primary", "user:1", *at).stdout.strip() == shard["primary"]
    finally:
        shardkv("node", "start", found["primary"], *at)
    assert_consistent(wait_status(cluster_dir, lambda s: s["healthy"]))

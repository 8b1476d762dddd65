"""``shardkv shard add|weight|remove --wait`` on a cluster from ``shardkv up --detach`` (real
processes): the new shard's members are started and recorded in cluster.json, each migration
ends ``done`` with exit status 0, ``rebalance status`` shows it, a removed shard's members
are stopped (through the launcher) and leave cluster.json, every key is still readable, bad
input exits non-zero with the reason, and ``shardkv down`` stops the new members too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]


def shardkv(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHARDKV_COORDINATORS"}
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_shard_add_wait_on_a_local_cluster(tmp_path: Path) -> None:
    d = str(tmp_path / "kv")
    up = shardkv("up", "--dir", d, "--shards", "2", "--replicas", "1", "--coordinators", "1",
                 "--engine", "memory", "--fsync", "never", "--detach")
    assert up.returncode == 0, up.stderr
    try:
        # Each command is a Python process (about a second here): a few keys, then many
        # through one bulk load.
        rows = "\n".join(json.dumps({"key": f"bulk:{i}", "value": f"b{i}"}) for i in range(300))
        (tmp_path / "rows.jsonl").write_text(rows + "\n")
        load = shardkv("load", "--dir", d, str(tmp_path / "rows.jsonl"))
        assert load.returncode == 0, load.stderr
        for i in range(6):
            put = shardkv("put", "--dir", d, f"cli:{i}", f"v{i}")
            assert put.returncode == 0, put.stderr

        bad = shardkv("shard", "add", "--dir", d, "--weight", "0")
        assert bad.returncode == 2 and "positive" in bad.stderr
        remove = shardkv("shard", "remove", "s9", "--dir", d)
        assert remove.returncode == 1 and "NOT_FOUND" in remove.stderr
        weight = shardkv("shard", "weight", "s1", "0", "--dir", d)
        assert weight.returncode == 2 and "positive" in weight.stderr

        added = shardkv("shard", "add", "--dir", d, "--wait")
        assert added.returncode == 0, added.stderr
        assert "adds shard s3" in added.stdout and "started nodes n3" in added.stdout
        assert "done" in added.stderr  # the progress line's last state

        described = json.loads((Path(d) / "cluster.json").read_text())
        new = [n for n in described["nodes"] if n["id"] == "n3"]
        assert new and new[0]["pid"] and pid_alive(new[0]["pid"])

        status = shardkv("rebalance", "status", "--dir", d, "--json")
        listing = json.loads(status.stdout)
        assert listing["migration"] is None and listing["migrations"][0]["state"] == "done"
        migration = listing["migrations"][0]["id"]
        abort = shardkv("rebalance", "abort", migration, "--dir", d)
        assert abort.returncode == 1 and "already done" in abort.stderr

        weighted = shardkv("shard", "weight", "s3", "2", "--dir", d, "--wait")
        assert weighted.returncode == 0, weighted.stderr
        assert "gives shard s3 weight 2" in weighted.stdout

        n1 = next(n for n in described["nodes"] if n["id"] == "n1")
        removed = shardkv("shard", "remove", "s1", "--dir", d, "--wait")
        assert removed.returncode == 0, removed.stderr
        assert "drains shard s1" in removed.stdout
        assert "stopped retired nodes n1" in removed.stderr
        assert not pid_alive(n1["pid"])
        described = json.loads((Path(d) / "cluster.json").read_text())
        assert "n1" not in {n["id"] for n in described["nodes"]}
        launcher = json.loads((Path(d) / "launcher.json").read_text())
        assert "n1" not in {n["id"] for n in launcher["nodes"]}

        for i in (0, 5):  # (each command is a process: a second or two on a busy machine)
            got = shardkv("get", "--dir", d, f"cli:{i}")
            assert got.returncode == 0 and got.stdout.strip() == f"v{i}", got.stderr
        scanned = shardkv("scan", "--dir", d, "--prefix", "", "--limit", "1000", "--json")
        assert scanned.returncode == 0, scanned.stderr
        assert scanned.stdout.count("bulk:") == 300 and scanned.stdout.count("cli:") == 6
    finally:
        down = shardkv("down", "--dir", d)
    assert down.returncode == 0


def test_a_killed_cli_leaves_the_migration_running(tmp_path: Path) -> None:
    """The migration lives in the coordinators' map: SIGKILL of ``shard add --wait`` in the
    middle of the copy changes nothing, and ``rebalance status`` later shows it done."""
    d = str(tmp_path / "kv")
    env = {"SHARDKV_MIGRATION_BATCH_KEYS": "40", "SHARDKV_MIGRATION_BATCH_PAUSE_S": "0.2",
           "SHARDKV_MIGRATION_PIPELINE": "1"}
    os.environ.update(env)  # the cluster's processes inherit the slow copy
    try:
        up = shardkv("up", "--dir", d, "--shards", "2", "--replicas", "1", "--coordinators",
                     "1", "--engine", "memory", "--fsync", "never", "--detach")
    finally:
        for name in env:
            os.environ.pop(name, None)
    assert up.returncode == 0, up.stderr
    try:
        rows = "\n".join(json.dumps({"key": f"bulk:{i}", "value": f"b{i}"})
                         for i in range(6000))
        (tmp_path / "rows.jsonl").write_text(rows + "\n")
        assert shardkv("load", "--dir", d, str(tmp_path / "rows.jsonl")).returncode == 0
        cli = subprocess.Popen([sys.executable, "-m", "shardkv.cluster.cli", "shard", "add",
                                "--dir", d, "--wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while True:
            listing = json.loads(shardkv("rebalance", "status", "--dir", d, "--json").stdout)
            running = listing["migration"]
            if running and running["state"] == "copying" and running["keys_moved"] > 0:
                break
            assert running or not listing["migrations"], "finished before the kill"
            assert time.monotonic() < deadline, listing
            time.sleep(0.3)
        cli.kill()
        cli.wait()
        while True:
            listing = json.loads(shardkv("rebalance", "status", "--dir", d, "--json").stdout)
            if listing["migration"] is None:
                break
            assert time.monotonic() < deadline + 60, listing
            time.sleep(0.5)
        assert listing["migrations"][0]["state"] == "done", listing
        scanned = shardkv("scan", "--dir", d, "--prefix", "bulk:", "--limit", "10000",
                          "--json")
        assert scanned.returncode == 0 and scanned.stdout.count("bulk:") == 6000
    finally:
        assert shardkv("down", "--dir", d).returncode == 0

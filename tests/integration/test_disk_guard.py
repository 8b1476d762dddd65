"""The low-disk guard on a real, small file system, and the disk maintenance commands.

A node's data directory on a tmpfs of a few MiB (root only: ``mount -t tmpfs``), with a
ballast file beside it: unique keys fill the disk until the node answers DISK_FULL (never
ENOSPC: the WAL keeps working, reads keep answering); removing the ballast brings writes
back. Both engines. Then ``shardkv node snapshot|compact|disk`` against a running node, by
id through a ``cluster.json`` and by ``--url``, with the admin token enforced.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import NodeFactory

pytestmark = pytest.mark.integration

MiB = 1 << 20
TMPFS_BYTES = 40 * MiB
BALLAST_BYTES = 12 * MiB
FLOOR_BYTES = 6 * MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def _put(http: aiohttp.ClientSession, url: str, key: str, value: bytes) -> dict:
    async with http.put(f"{url}/v1/kv/{key}", data=value) as resp:
        body = await resp.json()
        return {"status": resp.status, **body}


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_low_disk_refuses_writes_before_enospc_and_recovers(
    engine: str, small_disk: Path, node_factory: NodeFactory
) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(os.urandom(BALLAST_BYTES))
    node = node_factory(
        engine=engine, data_dir=small_disk / "data",
        extra_args=["--low-disk-bytes", str(FLOOR_BYTES), "--keep-snapshots", "1"],
        env={"SHARDKV_WAL_SEGMENT_BYTES": str(1 * MiB),
             "SHARDKV_SNAPSHOT_MIN_WAL_BYTES": str(2 * MiB)},
    )
    accepted: dict[str, bytes] = {}
    refused: dict | None = None
    async with aiohttp.ClientSession() as http:
        for i in range(TMPFS_BYTES // 8000):  # more than the disk can hold
            key, value = f"k{i:06d}", os.urandom(4000).hex().encode()
            answer = await _put(http, node.url, key, value)
            if answer["status"] != 200:
                refused = answer
                break
            accepted[key] = value
        assert refused is not None, "the disk never filled"
        assert refused["status"] == 507 and refused["error"] == "DISK_FULL", refused
        assert refused["retryable"] is False
        assert str(small_disk / "data") in refused["message"]
        assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize > 0
        # Reads still answer, and what was acknowledged is there.
        for key in list(accepted)[:: max(1, len(accepted) // 50)]:
            async with http.get(f"{node.url}/v1/kv/{key}") as resp:
                assert resp.status == 200 and await resp.read() == accepted[key]
        async with http.get(f"{node.url}/v1/disk") as resp:
            disk = await resp.json()
        assert disk["guard"]["refusing"] is True and disk["guard"]["refused"] >= 1
        assert disk["snapshot"]["taken"] >= 1  # it snapshotted and trimmed before refusing
        async with http.get(f"{node.url}/metrics") as resp:
            assert "shardkv_disk_refusing_writes 1.0" in await resp.text()

        ballast.unlink()  # the operator frees space: writes come back without a restart
        deadline = time.monotonic() + 20
        while (answer := await _put(http, node.url, "after", b"v"))["status"] != 200:
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.1)
    assert "No space left" not in node.log_text()
    assert "WAL failed" not in node.log_text()


def _shardkv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


async def test_snapshot_compact_and_disk_commands(node_factory: NodeFactory,
                                                  tmp_path: Path) -> None:
    token = "t" * 24
    node = node_factory(engine="sqlite", env={"SHARDKV_ADMIN_TOKEN": token})
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    (cluster_dir / "cluster.json").write_text(json.dumps(
        {"coordinators": [], "nodes": [{"id": "n1", "url": node.url, "pid": node.pid}]}))
    async with aiohttp.ClientSession() as http:
        for i in range(200):
            await _put(http, node.url, f"k{i}", os.urandom(2000))
        for i in range(200):
            async with http.delete(f"{node.url}/v1/kv/k{i}") as resp:
                assert resp.status == 200

    denied = _shardkv("node", "snapshot", "n1", "--dir", str(cluster_dir))
    assert denied.returncode == 1 and "UNAUTHORIZED" in denied.stderr
    auth = {"SHARDKV_ADMIN_TOKEN": token}
    snap = _shardkv("node", "snapshot", "n1", "--dir", str(cluster_dir), "--json", env=auth)
    assert snap.returncode == 0, snap.stderr
    report = json.loads(snap.stdout)
    assert report["lsn"] == 400 and report["reason"] == "admin" and report["keys"] == 0

    compact = _shardkv("node", "compact", "--url", node.url, "--json", env=auth)
    assert compact.returncode == 0, compact.stderr
    compacted = json.loads(compact.stdout)
    assert compacted["bytes_after"] <= compacted["bytes_before"]

    disk = _shardkv("node", "disk", "n1", "--dir", str(cluster_dir), "--json")
    assert disk.returncode == 0, disk.stderr
    shown = json.loads(disk.stdout)
    assert shown["snapshot"]["lsn"] == 400 and shown["compaction"]["count"] == 1
    assert shown["engine_bytes"] > 0 and shown["free_bytes"] > 0

    unknown = _shardkv("node", "snapshot", "n9", "--dir", str(cluster_dir))
    assert unknown.returncode == 2 and "no node 'n9'" in unknown.stderr

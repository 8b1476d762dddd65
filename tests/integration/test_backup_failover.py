"""WAL archiving across a failover (by hand: ``SHARDKV_BACKUP_FAILOVER=1``; ~20 s, left out
of CI's short backup tests): a 3-member shard archives, its primary is killed, the new
primary continues the archive from where the old one stopped, ``verify`` finds no gap, and a
point-in-time restore after the failover brings back the writes from both sides of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from cluster_fixtures import started_cluster
from eventually import eventually_async
from shardkv.backup.create import create_backup
from shardkv.backup.inspection import describe, verify
from shardkv.backup.pitr import plan_restore
from shardkv.backup.progress import ProgressLine
from shardkv.backup.repository.destination import LocalDestination
from shardkv.backup.restore import restore
from shardkv.client import Client
from shardkv.cluster.launcher import LocalCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("SHARDKV_BACKUP_FAILOVER") != "1",
                       reason="by hand: SHARDKV_BACKUP_FAILOVER=1 (archiving across a failover, "
                              "~20 s)"),
]
QUIET = ProgressLine(quiet=True)


async def test_the_archive_continues_across_a_failover(tmp_path, monkeypatch):
    dest_dir = tmp_path / "backups"
    monkeypatch.setenv("SHARDKV_ARCHIVE_TO", str(dest_dir))
    monkeypatch.setenv("SHARDKV_ARCHIVE_INTERVAL_S", "0.2")
    with contextlib.ExitStack() as stack:
        shape = {"coordinators": 1, "engine": "memory", "fsync": "never"}
        source = await asyncio.to_thread(
            stack.enter_context, started_cluster(tmp_path / "src", shards=1, replicas=3, **shape))
        monkeypatch.delenv("SHARDKV_ARCHIVE_TO")
        target = await asyncio.to_thread(
            stack.enter_context, started_cluster(tmp_path / "dst", shards=2, replicas=1, **shape))
        await _scenario(source, target, dest_dir)


async def _scenario(source: LocalCluster, target: LocalCluster, dest_dir: Path) -> None:
    src = source.plan.coordinator_urls()
    dest = LocalDestination(dest_dir, create=True)
    async with Client(src) as kv:
        await kv.mput([(f"before:{i}", b"1") for i in range(50)])
    await asyncio.to_thread(create_backup, src, dest, None, QUIET)
    async with Client(src) as kv:
        await kv.mput([(f"middle:{i}", b"2") for i in range(50)])
    (old,) = source.primaries()
    before_kill = time.time()
    await eventually_async(lambda: _archived(dest, before_kill), within_s=15,
                           what="the archive to catch up before the kill")
    source.kill(old)
    await eventually_async(lambda: _new_primary(source, old), within_s=30,
                           what="a failover")
    async with Client(src, timeout=30) as kv:
        await kv.mput([(f"after:{i}", b"3") for i in range(50)])
    last_write = time.time()
    await eventually_async(lambda: _archived(dest, last_write), within_s=20,
                           what="the new primary to archive")
    report = verify(dest)
    assert report.ok, report.problems
    plan = plan_restore(dest, None, last_write)
    await restore(dest, plan, None, target.plan.coordinator_urls(), force=False,
                  progress=QUIET)
    async with Client(target.plan.coordinator_urls()) as kv:
        keys = [item.key async for item in kv.scan(prefix="")]
    assert len(keys) == 150 and {k.split(":")[0] for k in keys} == {"before", "middle",
                                                                    "after"}


async def _archived(dest: LocalDestination, moment: float) -> bool:
    listing = await asyncio.to_thread(describe, dest)
    backups = listing["backups"]
    return bool(backups) and (backups[-1].get("restorable_until") or 0) >= moment


async def _new_primary(cluster: LocalCluster, old: str) -> bool:
    primaries = await asyncio.to_thread(cluster.primaries)
    return bool(primaries) and old not in primaries

"""Online shard removal survives faults with real processes (issue 12): a SIGKILL of the
source primary, of a target primary or of the coordinator leader, and a pause (SIGSTOP, as
a partition cuts a process off from everyone) of a target primary, each landed in the middle
of the copy or while the migration is ``flipping`` (the source's fence is held for a moment
by ``SHARDKV_MIGRATION_FENCE_HOLD_S`` so the fault lands inside it).

3 coordinators, 3 shards x 2 members (memory engine); ``DELETE /admin/shards/s2`` drains s2
into s1 and s3 under a put/CAS/incr load. Afterwards the migration is ``done`` (a new leader
resumes it, a fence that failed is redone, a new source or target primary gets a fresh
export attempt), every acknowledged write is readable with an allowed value, every preloaded
key with its value, and no shard of the final map holds a key it does not own.

CI runs three cases (a target killed mid-copy, the source killed and a target paused while
flipping); ``SHARDKV_RESHARD_FAULTS_FULL=1`` runs the whole matrix (by hand, about 5 minutes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import current_map, started_cluster
from reshard_workload import ReshardLoad
from shardkv.client import Client
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster
from test_resharding_add import preload_keys, send
from test_resharding_faults import coordinator_urls, leader_id, record_of
from test_resharding_remove import assert_all_readable, assert_owned_only

pytestmark = [pytest.mark.integration]

FULL = os.environ.get("SHARDKV_RESHARD_FAULTS_FULL") == "1"
CI_CASES = {("copy", "kill-target"), ("flip", "kill-source"), ("flip", "stop-target")}
CASES = [(phase, fault) for phase in ("copy", "flip")
         for fault in ("kill-source", "kill-target", "kill-leader", "stop-target")]
FAULT_S = 4.0  # how long the victim stays down or paused (failover timeout: 2 s)


@pytest.fixture(name="cluster")
def cluster_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("SHARDKV_MIGRATION_BATCH_KEYS", "40")
    monkeypatch.setenv("SHARDKV_MIGRATION_BATCH_PAUSE_S", "0.1")
    monkeypatch.setenv("SHARDKV_MIGRATION_PIPELINE", "1")  # one batch at a time: a slow copy
    monkeypatch.setenv("SHARDKV_MIGRATION_FENCE_HOLD_S", "1.5")
    monkeypatch.setenv("SHARDKV_FAILOVER_TIMEOUT_S", "2")
    with started_cluster(tmp_path, shards=3, replicas=2, coordinators=3, engine="memory",
                         fsync="never") as cluster:
        yield cluster


async def wait_for_state(cluster: LocalCluster, migration: str, phase: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        record = await record_of(cluster, migration)
        if phase == "copy" and record["state"] == "copying" and record["keys_moved"] > 0:
            return
        if phase == "flip" and record["state"] == "flipping":
            return
        assert record["state"] in ("copying", "catching_up", "flipping"), record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.05)


async def wait_ended(cluster: LocalCluster, migration: str) -> dict:
    deadline = time.monotonic() + 150
    while True:
        try:
            record = await record_of(cluster, migration)
        except AssertionError:  # no coordinator answered (a leader election)
            record = {"state": "unknown"}
        if record["state"] in ("done", "aborted", "failed"):
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.2)


async def inject(cluster: LocalCluster, fault: str) -> str:
    """Land ``fault``; the victim comes back after FAULT_S (with two members per shard,
    a majority needs it again)."""
    m = ClusterMap.from_dict(current_map(cluster))
    victim = {"kill-source": m.shards["s2"].primary, "kill-target": m.shards["s1"].primary,
              "stop-target": m.shards["s3"].primary,
              "kill-leader": leader_id(cluster)}[fault]
    assert victim is not None
    if fault.startswith("kill"):
        cluster.kill(victim)
        await asyncio.sleep(FAULT_S)
        cluster.restart(victim)
    else:
        pid = cluster.pid_of(victim)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(FAULT_S)
        finally:
            os.kill(pid, signal.SIGCONT)
    return victim


@pytest.mark.parametrize(("phase", "fault"), CASES, ids=[f"{p}-{f}" for p, f in CASES])
async def test_remove_survives_a_fault(cluster: LocalCluster, phase: str, fault: str) -> None:
    if not FULL and (phase, fault) not in CI_CASES:
        pytest.skip("the full fault matrix runs with SHARDKV_RESHARD_FAULTS_FULL=1")
    urls = coordinator_urls(cluster)
    async with Client(urls, timeout=20.0) as kv:
        preload = await preload_keys(kv, 2400)
        load = ReshardLoad(kv, put_workers=3, cas_workers=2, incr_workers=2, readers=1)
        load.start()
        status, body = await asyncio.to_thread(send, "DELETE", f"{urls[0]}/admin/shards/s2")
        assert status == 202, body
        migration = body["migration"]

        await wait_for_state(cluster, migration, phase)
        victim = await inject(cluster, fault)
        record = await wait_ended(cluster, migration)
        await load.stop()
        print("fault", phase, fault, victim, "load", load.ops, load.errors, load.error_kinds)
        assert record["state"] == "done", record

        after = ClusterMap.from_dict(current_map(cluster))
        assert after.ring.shards == {"s1": 1, "s3": 1} and "s2" not in after.shards
        await assert_all_readable(kv, load, preload, 0)
    await assert_owned_only(after)


async def test_an_aborted_remove_cleans_its_targets(cluster: LocalCluster) -> None:
    """Abort mid-copy: the ring is unchanged, s2 keeps every key, and s1 and s3 delete the
    partial copies they received (``leftovers`` empties) before another migration may
    start; no shard holds a key it does not own."""
    urls = coordinator_urls(cluster)
    async with Client(urls, timeout=20.0) as kv:
        preload = await preload_keys(kv, 2400)
        before = ClusterMap.from_dict(current_map(cluster))
        load = ReshardLoad(kv, put_workers=3, cas_workers=2, incr_workers=2, readers=1)
        load.start()
        status, body = await asyncio.to_thread(send, "DELETE", f"{urls[0]}/admin/shards/s2")
        assert status == 202, body
        migration = body["migration"]
        await wait_for_state(cluster, migration, "copy")
        status, answer = await asyncio.to_thread(
            send, "POST", f"{urls[0]}/admin/migrations/{migration}/abort")
        assert status == 200 and answer["state"] == "aborted", answer
        record = await record_of(cluster, migration)
        assert record["leftovers"] == ["s1", "s3"], record
        deadline = time.monotonic() + 60
        while record["leftovers"]:
            assert time.monotonic() < deadline, record
            await asyncio.sleep(0.2)
            record = await record_of(cluster, migration)
        await load.stop()
        after = ClusterMap.from_dict(current_map(cluster))
        assert after.ring.to_dict() == before.ring.to_dict() and after.migration is None
        await assert_all_readable(kv, load, preload, 0)
    held = await assert_owned_only(after)
    assert held["s2"]

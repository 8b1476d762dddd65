"""Online shard add survives a SIGKILL in the middle of the copy (issue 12): of a source
primary, of the target primary, or of the coordinator leader. Real processes (3 coordinators,
2 shards x 2 members, memory engine); the copy is slowed down (small batches with a pause) so
the kill lands while keys are moving. Afterwards the migration is ``done`` (a new leader
resumes it; a new source or target primary gets a fresh export attempt), every acknowledged
write is readable with an allowed value, and no shard holds a key it does not own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_fixtures import current_map, started_cluster
from reshard_workload import ReshardLoad
from shardkv.client import Client
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster, http_get_json
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.shard_members import start_shard_members
from test_resharding_add import keys_held, send, wait_finished

pytestmark = [pytest.mark.integration]


@pytest.fixture(name="slow_copy_cluster")
def slow_copy_cluster_fixture(tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("SHARDKV_MIGRATION_BATCH_KEYS", "40")
    monkeypatch.setenv("SHARDKV_MIGRATION_BATCH_PAUSE_S", "0.1")
    monkeypatch.setenv("SHARDKV_MIGRATION_PIPELINE", "1")  # one batch at a time: a slow copy
    monkeypatch.setenv("SHARDKV_FAILOVER_TIMEOUT_S", "2")
    with started_cluster(tmp_path, shards=2, replicas=2, coordinators=3, engine="memory",
                         fsync="never") as cluster:
        yield cluster


def leader_id(cluster: LocalCluster) -> str:
    for c in cluster.plan.coordinators:
        status, body = http_get_json(f"{c.url}/v1/map")
        if status == 200 and body.get("leader"):
            return str(body["leader"])
    raise AssertionError("no coordinator names a leader")


def coordinator_urls(cluster: LocalCluster) -> list[str]:
    return cluster.plan.coordinator_urls()


async def record_of(cluster: LocalCluster, migration: str) -> dict[str, Any]:
    for url in coordinator_urls(cluster):
        status, body = await asyncio.to_thread(send, "GET", f"{url}/admin/migrations/{migration}")
        if status == 200:
            return body
    raise AssertionError("no coordinator answered")


@pytest.mark.parametrize("victim", ["source", "target", "leader"])
async def test_add_survives_a_kill_mid_copy(slow_copy_cluster: LocalCluster,
                                            victim: str) -> None:
    cluster = slow_copy_cluster
    urls = coordinator_urls(cluster)
    # two members per shard: the killed one is restarted after the failover (see below)
    async with Client(urls, timeout=20.0) as kv:
        preload = {f"pre:{i}": f"value-{i}".encode() for i in range(2400)}
        items = list(preload.items())
        for start in range(0, len(items), 200):
            await kv.mput(dict(items[start:start + 200]))
        load = ReshardLoad(kv, put_workers=3, cas_workers=2, incr_workers=2, readers=1)
        load.start()

        status, body = await asyncio.to_thread(send, "POST", f"{urls[0]}/admin/shards",
                                               {"shard": "s3"})
        assert status == 202, body
        migration = body["migration"]
        start_shard_members(cluster, "s3")

        deadline = time.monotonic() + 60
        while True:  # mid-copy: keys are moving, the flip has not happened
            record = await record_of(cluster, migration)
            if record["state"] == "copying" and record["keys_moved"] > 0:
                break
            assert record["state"] == "copying" and time.monotonic() < deadline, record
            await asyncio.sleep(0.1)

        m = ClusterMap.from_dict(current_map(cluster))
        if victim == "source":
            killed = m.shards["s1"].primary
        elif victim == "target":
            killed = m.shards["s3"].primary
        else:
            leader = leader_id(cluster)
            killed = leader
        assert killed is not None
        cluster.kill(killed)
        # A crash, then the process comes back (as a replica, or a follower): with two
        # members per shard, a majority needs it again.
        await asyncio.sleep(4.0)
        cluster.restart(killed)

        record = await wait_finished(urls[0] if victim != "leader" or
                                     cluster.plan.coordinators[0].id != killed else urls[1],
                                     migration)
        await load.stop()
        assert record["state"] == "done", record

        after = ClusterMap.from_dict(current_map(cluster))
        assert after.ring.shards == {"s1": 1, "s2": 1, "s3": 1}
        problems = await load.check(kv)
        assert not problems, problems[:20]
        for key, value in preload.items():
            item = await kv.get(key)
            assert item is not None and item.value == value, key

    for shard in ("s1", "s2", "s3"):
        primary = after.primary_of(shard)
        assert primary is not None
        strays = [k for k in await keys_held(primary.url) if shard_for_key(after, k) != shard]
        assert not strays, (shard, strays[:5])


async def test_abort_mid_copy_leaves_the_map_and_the_data_as_they_were(
        slow_copy_cluster: LocalCluster) -> None:
    cluster = slow_copy_cluster
    urls = coordinator_urls(cluster)
    async with Client(urls, timeout=20.0) as kv:
        preload = {f"pre:{i}": f"value-{i}".encode() for i in range(2400)}
        items = list(preload.items())
        for start in range(0, len(items), 200):
            await kv.mput(dict(items[start:start + 200]))
        before = ClusterMap.from_dict(current_map(cluster))
        load = ReshardLoad(kv, put_workers=3, cas_workers=2, incr_workers=2, readers=1)
        load.start()
        status, body = await asyncio.to_thread(send, "POST", f"{urls[0]}/admin/shards", {})
        assert status == 202, body
        migration, shard = body["migration"], body["shard"]
        members = start_shard_members(cluster, shard)
        deadline = time.monotonic() + 60
        while True:
            record = await record_of(cluster, migration)
            if record["state"] == "copying" and record["keys_moved"] > 0:
                break
            assert record["state"] == "copying" and time.monotonic() < deadline, record
            await asyncio.sleep(0.1)

        status, answer = await asyncio.to_thread(
            send, "POST", f"{urls[0]}/admin/migrations/{migration}/abort")
        assert status == 200 and answer["state"] == "aborted", answer
        await asyncio.sleep(1.0)  # writes go on after the abort, to the old owners
        await load.stop()

        after = ClusterMap.from_dict(current_map(cluster))
        assert after.ring.to_dict() == before.ring.to_dict()
        assert shard not in after.shards and after.migration is None
        for spec in members:  # parked, never reused by another shard
            node = next((n for nid, n in after.nodes.items() if n.url == spec.url), None)
            assert node is not None and node.shard is None and node.status == "draining"
        record = await record_of(cluster, migration)
        assert record["state"] == "aborted" and record["error"] == "aborted by the operator"
        problems = await load.check(kv)
        assert not problems, problems[:20]
        assert load.ops > 0
        for key, value in preload.items():
            item = await kv.get(key)
            assert item is not None and item.value == value, key
        status, answer = await asyncio.to_thread(
            send, "POST", f"{urls[0]}/admin/migrations/{migration}/abort")
        assert status == 412 and "already aborted" in answer["message"], answer

"""Online shard remove and reweight on real processes (issue 12), both engines.

A local cluster (1 coordinator, 3 shards x 2 members) holds data and takes the put/CAS/incr
load of 16 coroutine clients while ``DELETE /admin/shards/s2`` drains s2 into s1 and s3 (one
source, two targets that already hold keys and take writes: their LSN jumps above every
version s2 can export), then ``PUT /admin/shards/s1/weight`` gives s1 weight 3 (s3 gives s1
part of its arcs). After each step: every acknowledged write is readable with its value,
counters equal their acknowledged increments (within the unacknowledged attempts), versions
seen by readers never went backward (checked once the load stops, after both steps), a
moved key's version is greater than before the move,
TTLs moved with their keys, and no shard holds a key it does not own (the removed one holds
none and has left the map, its members parked as draining).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import current_map, started_cluster
from reshard_workload import ReshardLoad
from shardkv.client import Client
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.ring import shard_for_key
from test_resharding_add import keys_held, preload_keys, send, wait_finished

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["memory", "sqlite"], name="cluster")
def cluster_fixture(request: pytest.FixtureRequest,
                    tmp_path: Path) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path, shards=3, replicas=2, coordinators=1,
                         engine=request.param, fsync="never") as cluster:
        yield cluster


async def assert_owned_only(m: ClusterMap) -> dict[str, list[bytes]]:
    """Every shard's primary holds only keys it owns, and no key is on two shards."""
    held: dict[str, list[bytes]] = {}
    for shard in sorted(m.shards):
        primary = m.primary_of(shard)
        assert primary is not None, shard
        held[shard] = await keys_held(primary.url)
        strays = [k for k in held[shard] if shard_for_key(m, k) != shard]
        assert not strays, (shard, strays[:5])
    everything = [k for keys in held.values() for k in keys]
    assert len(set(everything)) == len(everything)
    return held


async def assert_all_readable(kv: Client, load: ReshardLoad, preload: dict[str, bytes],
                              min_ops: int) -> None:
    """The stopped load's acknowledged writes and every preloaded key read back right."""
    problems = await load.check(kv)
    assert not problems, problems[:20]
    assert load.ops > min_ops
    for key, value in preload.items():
        item = await kv.get(key)
        assert item is not None and item.value == value, key


async def test_remove_then_reweight_under_write_load(cluster: LocalCluster) -> None:
    coordinator = cluster.plan.coordinators[0].url
    async with Client([coordinator]) as kv:
        preload = await preload_keys(kv, 900)
        before = ClusterMap.from_dict(current_map(cluster))
        s2_members = list(before.shards["s2"].members)
        versions = {}
        for key in preload:
            item = await kv.get(key)
            assert item is not None
            versions[key] = item.version

        load = ReshardLoad(kv)
        load.start()
        await asyncio.sleep(1.0)

        status, body = await asyncio.to_thread(send, "DELETE",
                                               f"{coordinator}/admin/shards/s2")
        assert status == 202, body
        assert body["shard"] == "s2"
        # Bad input while it runs: clear errors, nothing changes.
        for method, path, payload, code in (
                ("DELETE", "/admin/shards/s1", None, "VERSION_MISMATCH"),
                ("PUT", "/admin/shards/s1/weight", {"weight": 2}, "VERSION_MISMATCH"),
                ("PUT", "/admin/shards/s1/weight", {"weight": 0}, "INVALID_ARGUMENT"),
                ("PUT", "/admin/shards/s1/weight", {"weight": "x"}, "INVALID_ARGUMENT"),
                ("PUT", "/admin/shards/s1/weight", {"heavy": 1}, "INVALID_ARGUMENT")):
            status, answer = await asyncio.to_thread(send, method, f"{coordinator}{path}",
                                                     payload)
            assert answer["error"] == code, (method, path, payload, answer)
        record = await wait_finished(coordinator, body["migration"])
        assert record["state"] == "done", record
        assert record["kind"] == "remove" and record["targets"] == ["s1", "s3"]
        assert sorted(record["retired"]) == sorted(s2_members)
        assert record["keys_moved"] > 0

        removed = ClusterMap.from_dict(current_map(cluster))
        assert set(removed.ring.shards) == {"s1", "s3"} and "s2" not in removed.shards
        assert removed.ring.version == before.ring.version + 1
        for node_id in s2_members:
            node = removed.nodes[node_id]
            assert (node.shard, node.status) == (None, "draining"), node
        # The retired members were cleaned before they left the map.
        for node_id in s2_members:
            assert await keys_held(cluster.spec(node_id).url, "eventual") == []
        # (The load's own check runs once it is stopped, after both steps.)
        for key, value in preload.items():
            item = await kv.get(key)
            assert item is not None and item.value == value, key
            if shard_for_key(before, key.encode()) == "s2":
                assert item.version > versions[key], (key, item.version, versions[key])
        moved_with_ttl = [k for k in list(preload)[::10]
                          if shard_for_key(before, k.encode()) == "s2"]
        assert moved_with_ttl
        for key in moved_with_ttl:
            ttl = await kv.ttl(key)
            assert ttl is not None and 0 < ttl <= 3600, key
        await assert_owned_only(removed)

        # Reweight: s1 takes part of s3's arcs (s3 keeps writing meanwhile).
        status, body = await asyncio.to_thread(send, "PUT",
                                               f"{coordinator}/admin/shards/s1/weight",
                                               {"weight": 3})
        assert status == 202, body
        record = await wait_finished(coordinator, body["migration"])
        assert record["state"] == "done", record
        assert (record["sources"], record["targets"]) == (["s3"], ["s1"])
        await asyncio.sleep(0.5)
        await load.stop()
        print("load", load.ops, load.errors, load.error_kinds, load.error_samples)

        weighted = ClusterMap.from_dict(current_map(cluster))
        assert weighted.ring.shards == {"s1": 3, "s3": 1}
        await assert_all_readable(kv, load, preload, 100)
        held = await assert_owned_only(weighted)
        assert len(held["s1"]) > len(held["s3"])

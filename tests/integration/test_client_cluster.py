"""The client against a real local cluster (3 coordinators, 2 shards x 3 members) started by
the launcher: every operation across shards, multi-key splitting, replica reads, map refresh
after STALE_MAP, timeouts, SyncClient from several threads, update() under contention, and
retries across a primary failover (last: it changes the cluster)."""

from __future__ import annotations

import signal
import threading

import aiohttp
import pytest
from cluster_fixtures import (  # noqa: F401
    local_cluster_fixture,
    wait_until,
)
from shardkv.client import Client, Item, Retry, SyncClient, Timeout
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.ring import shard_for_key

pytestmark = [pytest.mark.integration]


def keys_of_shard(cmap: ClusterMap, shard: str, count: int, prefix: str = "k") -> list[str]:
    found = []
    i = 0
    while len(found) < count:
        key = f"{prefix}{i}"
        if shard_for_key(cmap, key.encode()) == shard:
            found.append(key)
        i += 1
    return found


async def test_operations_across_shards(local_cluster: LocalCluster) -> None:
    coordinators = local_cluster.plan.coordinator_urls()
    async with Client(coordinators) as kv:
        cmap = kv.cluster_map
        assert cmap is not None and len(cmap.shards) == 2
        keys = [f"user:{i:03d}" for i in range(200)]
        assert {shard_for_key(cmap, k.encode()) for k in keys} == {"s1", "s2"}
        versions = await kv.mput({k: k.upper().encode() for k in keys})
        assert len(versions) == 200
        got = await kv.mget([*reversed(keys), "user:none"])
        assert [i.value if i else None for i in got] == [
            k.upper().encode() for k in reversed(keys)] + [None]
        scanned = [it.key async for it in kv.scan("user:", page_size=17)]
        assert scanned == keys  # merged across shards, in key order, text like the keys
        for key in ("user:000", "user:199"):
            item = await kv.get(key)
            assert item is not None and item.value == key.upper().encode()
        assert await kv.incr("counter:x", 3) == 3
        assert await kv.mdelete(keys[:50]) == 50
        assert await kv.get("user:000") is None
        served = set(kv._executor.served_by)
        primaries = {cmap.primary_of(s).url for s in cmap.shards}
        assert primaries <= served  # both primaries did work


async def test_replica_reads(local_cluster: LocalCluster) -> None:
    async with Client(local_cluster.plan.coordinator_urls()) as kv:
        cmap = kv.cluster_map
        version = await kv.put("replicated", b"yes")  # majority: a replica holds it
        replica_urls = {n.url for nid, n in cmap.nodes.items()
                        if nid in cmap.shards[n.shard].members and nid != cmap.shards[
                            n.shard].primary}

        async def replica_has_it() -> bool:
            item = await kv.get("replicated", consistency="eventual", max_staleness_ms=5000,
                                min_version=version)
            return item is not None and item.value == b"yes"

        await wait_until(replica_has_it, within=10, what="a replica to serve the write")
        for _ in range(6):
            item = await kv.get("replicated", consistency="eventual", max_staleness_ms=5000)
            assert item is not None and item.value == b"yes"
        assert set(kv._executor.served_by) & replica_urls


async def test_stale_map_is_refreshed(local_cluster: LocalCluster) -> None:
    async with Client(local_cluster.plan.coordinator_urls(), watch_map=False) as kv:
        real = kv.cluster_map
        assert real is not None and real.ring.version >= 1
        stale = real.copy()
        stale.version = real.version - 1
        stale.ring.version = real.ring.version - 1
        kv.router._map = stale  # as if the client had slept through a ring change
        await kv.put("after-stale", b"1")
        assert kv.router.version >= real.version  # STALE_MAP made it fetch the map
        assert kv._executor.hops >= 1
        assert (await kv.get("after-stale")).value == b"1"


async def test_a_moved_primary_is_followed_after_not_primary(
    local_cluster: LocalCluster,
) -> None:
    """The coordinator moves shard s2's primary; a client still holding the old map writes
    to the old primary, gets NOT_PRIMARY, refreshes the map and lands on the new one."""
    async with Client(local_cluster.plan.coordinator_urls(), watch_map=False) as kv:
        old_map = kv.cluster_map.copy()
        shard = old_map.shards["s2"]
        key = keys_of_shard(old_map, "s2", 1, prefix="moved")[0]
        await kv.put(key, b"1")
        new_primary = next(m for m in shard.members if m != shard.primary)
        async with aiohttp.ClientSession() as http:
            url = f"{local_cluster.plan.coordinators[0].url}/admin/shards/s2/primary"
            async with http.post(url, json={"node": new_primary}) as resp:
                assert resp.status == 200, await resp.text()

            async def roles_switched() -> bool:
                old = await kv.ping(old_map.nodes[shard.primary].url)
                new = await kv.ping(old_map.nodes[new_primary].url)
                return old["role"] != "primary" and new["role"] == "primary"

            await wait_until(roles_switched, within=20, what="the nodes to follow the move")
        assert kv.router.version == old_map.version  # still the old map: no watch
        version = await kv.put(key, b"2")
        assert kv._executor.hops >= 1  # NOT_PRIMARY was followed
        assert kv.cluster_map.shards["s2"].primary == new_primary
        item = await kv.get(key)
        assert item is not None and (item.value, item.version) == (b"2", version)


async def test_a_frozen_primary_times_out_within_the_budget(local_cluster: LocalCluster) -> None:
    async with Client(local_cluster.plan.coordinator_urls()) as kv:
        cmap = kv.cluster_map
        key = keys_of_shard(cmap, "s2", 1, prefix="frozen")[0]
        await kv.put(key, b"v")
        primary = local_cluster.procs[cmap.shards["s2"].primary]
        primary.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(Timeout):
                await kv.get(key, timeout=0.3)
        finally:
            primary.send_signal(signal.SIGCONT)
        assert (await kv.get(key, timeout=10)).value == b"v"


def test_sync_client_threads_and_update_contention(local_cluster: LocalCluster) -> None:
    errors: list[BaseException] = []
    threads, per_thread = 6, 15

    def bump(item: Item | None) -> bytes:
        return str((int(item.value) if item else 0) + 1).encode()

    with SyncClient(local_cluster.plan.coordinator_urls()) as kv:

        def worker(t: int) -> None:
            try:
                for i in range(per_thread):
                    kv.put(f"thread:{t}:{i}", b"x")
                    kv.update("cluster-counter", bump)
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert errors == []
        assert kv.get("cluster-counter").value == str(threads * per_thread).encode()
        assert len(list(kv.scan("thread:"))) == threads * per_thread


async def kill_primary_and_keep_writing(
    cluster: LocalCluster, shard: str, prefix: str
) -> tuple[list[str], ClusterMap, ClusterMap]:
    """Write 10 keys of ``shard``, SIGKILL its primary, write 10 more through the failover.
    Returns the keys and the maps before and after."""
    retry = Retry(ExponentialBackoff(base=0.05, cap=0.5), retries=400)
    async with Client(cluster.plan.coordinator_urls(), retry=retry, timeout=60.0) as kv:
        before = kv.cluster_map.copy()
        keys = keys_of_shard(before, shard, 20, prefix=prefix)
        for key in keys[:10]:
            await kv.put(key, b"before")
        cluster.kill(before.shards[shard].primary)
        # Writes to the shard keep succeeding: the client retries, the map moves on.
        for key in keys[10:]:
            await kv.put(key, b"after")
        after = kv.cluster_map.copy()
        got = await kv.mget(keys[10:])
        assert [i.value for i in got] == [b"after"] * 10
    return keys, before, after


async def test_writes_continue_across_a_primary_failover(local_cluster: LocalCluster) -> None:
    _, before, after = await kill_primary_and_keep_writing(local_cluster, "s1", "fo")
    assert after.shards["s1"].primary != before.shards["s1"].primary
    assert after.shards["s1"].epoch > before.shards["s1"].epoch
    local_cluster.restart_dead()  # give the module's cluster its member back


async def test_acknowledged_writes_survive_a_failover(local_cluster: LocalCluster) -> None:
    keys, _, _ = await kill_primary_and_keep_writing(local_cluster, "s2", "ack")
    async with Client(local_cluster.plan.coordinator_urls(), timeout=30.0) as kv:
        got = await kv.mget(keys)
    assert [i.value if i else None for i in got] == [b"before"] * 10 + [b"after"] * 10
    local_cluster.restart_dead()

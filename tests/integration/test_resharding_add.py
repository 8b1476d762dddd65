"""Online shard add on real processes (issue 12), both engines.

A local cluster (1 coordinator, 2 shards x 2 members) holds data and takes a concurrent load
of puts (some with a TTL), compare-and-swaps and increments from 16 coroutine clients while
``POST /admin/shards`` adds shard s3 and its two members are started as processes. After the
migration is ``done``: every acknowledged write is readable with its value, counters equal
their acknowledged increments (within the unacknowledged attempts), versions seen by readers
never went backward, s3 holds keys, every source holds only keys it owns (cleaning done), and
TTLs moved with their keys. Bad input on the way gets clear errors and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster_fixtures import CLUSTER_READY_TIMEOUT_S, current_map, started_cluster
from reshard_workload import ReshardLoad
from shardkv.client import Client
from shardkv.client.connection import NodeConnection
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import ClusterPlan, LocalCluster
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.shard_members import start_shard_members

pytestmark = [pytest.mark.integration]

MIGRATION_TIMEOUT_S = 120.0


@pytest.fixture(params=["memory", "sqlite"], name="cluster")
def cluster_fixture(request: pytest.FixtureRequest,
                    tmp_path: Path) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path, shards=2, replicas=2, coordinators=1,
                         engine=request.param, fsync="never") as cluster:
        yield cluster


def send(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def wait_finished(coordinator: str, migration: str) -> dict[str, Any]:
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while True:
        status, record = await asyncio.to_thread(
            send, "GET", f"{coordinator}/admin/migrations/{migration}")
        assert status == 200, record
        if record["state"] in ("done", "aborted", "failed"):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"migration still {record['state']}: {record}")
        await asyncio.sleep(0.2)


async def add_shard(cluster: LocalCluster, shard: str) -> dict[str, Any]:
    """Add ``shard`` (its members started as processes) and wait until the migration is
    done; returns its record."""
    coordinator = cluster.plan.coordinator_urls()[0]
    status, body = await asyncio.to_thread(send, "POST", f"{coordinator}/admin/shards",
                                           {"shard": shard})
    assert status == 202, body
    start_shard_members(cluster, shard)
    record = await wait_finished(coordinator, body["migration"])
    assert record["state"] == "done", record
    return record


async def keys_held(url: str, consistency: str = "strong") -> list[bytes]:
    """Every key a node holds, read with its own scan (which ignores ownership);
    ``eventual`` reads a node that is not a primary (a retired member)."""
    keys: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        conn = NodeConnection(url, session)
        cursor = None
        try:
            while True:
                args: dict[str, Any] = {"limit": 1000, "consistency": consistency}
                if cursor is not None:
                    args["cursor"] = cursor
                page = await conn.call("scan", args, 10.0)
                keys.extend(bytes(k) for k, _, _ in page["items"])
                cursor = page["cursor"]
                if cursor is None:
                    return keys
        finally:
            await conn.close()


async def preload_keys(kv: Client, count: int) -> dict[str, bytes]:
    """``count`` keys ``pre:i`` written before a migration; every tenth gets a 1-hour TTL."""
    preload = {f"pre:{i}": f"value-{i}".encode() for i in range(count)}
    for start in range(0, len(preload), 100):
        await kv.mput(dict(list(preload.items())[start:start + 100]))
    for i in range(0, count, 10):
        await kv.expire(f"pre:{i}", 3600)
    return preload


async def test_add_a_shard_under_write_load(cluster: LocalCluster) -> None:
    coordinator = cluster.plan.coordinators[0].url
    async with Client([coordinator]) as kv:
        preload = await preload_keys(kv, 600)
        before = ClusterMap.from_dict(current_map(cluster))

        load = ReshardLoad(kv)
        load.start()
        await asyncio.sleep(1.0)

        status, body = await asyncio.to_thread(send, "POST", f"{coordinator}/admin/shards",
                                               {"shard": "s3"})
        assert status == 202, body
        migration = body["migration"]
        # Bad input while it runs: clear errors, nothing changes.
        for payload, code in (({"shard": "s3"}, "VERSION_MISMATCH"),
                              ({"weight": 0}, "INVALID_ARGUMENT"),
                              ({"weight": "x"}, "INVALID_ARGUMENT"),
                              ({}, "VERSION_MISMATCH")):
            status, answer = await asyncio.to_thread(send, "POST",
                                                     f"{coordinator}/admin/shards", payload)
            assert answer["error"] == code, (payload, answer)
        status, answer = await asyncio.to_thread(send, "DELETE", f"{coordinator}/admin/shards/s1")
        assert status == 412 and answer["error"] == "VERSION_MISMATCH", answer
        start_shard_members(cluster, "s3")

        record = await wait_finished(coordinator, migration)
        await asyncio.sleep(0.5)
        await load.stop()
        print("load", load.ops, load.errors, load.error_kinds)
        assert record["state"] == "done", record
        assert record["keys_moved"] > 0 and record["finished_at"] >= record["started_at"]

        after = ClusterMap.from_dict(current_map(cluster))
        assert set(after.ring.shards) == {"s1", "s2", "s3"}
        assert after.ring.version == before.ring.version + 1
        assert after.migration is None

        problems = await load.check(kv)
        assert not problems, problems[:20]
        assert load.ops > 100
        for key, value in preload.items():
            item = await kv.get(key)
            assert item is not None and item.value == value, key
        moved_with_ttl = [k for k in list(preload)[::10]
                          if shard_for_key(after, k.encode()) == "s3"]
        assert moved_with_ttl
        for key in moved_with_ttl:
            ttl = await kv.ttl(key)
            assert ttl is not None and 0 < ttl <= 3600, key

        status, answer = await asyncio.to_thread(
            send, "POST", f"{coordinator}/admin/migrations/{migration}/abort")
        assert status == 412 and answer["error"] == "VERSION_MISMATCH", answer

    # Ownership: s3 holds keys now, and no shard holds a key it does not own.
    held: dict[str, list[bytes]] = {}
    for shard in ("s1", "s2", "s3"):
        primary = after.primary_of(shard)
        assert primary is not None
        held[shard] = await keys_held(primary.url)
        strays = [k for k in held[shard] if shard_for_key(after, k) != shard]
        assert not strays, (shard, strays[:5])
    assert held["s3"]
    assert len(set(held["s1"]) | set(held["s2"]) | set(held["s3"])) == sum(
        len(v) for v in held.values())


async def test_a_retry_that_crosses_the_flip_is_not_applied_twice(tmp_path: Path) -> None:
    """Exactly-once sessions move with the keys: an incr applied on the old owner, retried
    (same client id and seq) on the new owner after the flip, is answered from its session
    record and not applied again."""
    plan = ClusterPlan.new(tmp_path, shards=2, replicas=1, coordinators=1, engine="memory",
                           fsync="never")
    cluster = LocalCluster(tmp_path, plan)
    try:
        cluster.start()
        cluster.wait_ready(CLUSTER_READY_TIMEOUT_S)
        before = ClusterMap.from_dict(current_map(cluster))
        target_ring = ClusterMap.from_dict(current_map(cluster))
        target_ring.ring.shards = {**before.ring.shards, "s3": 1}
        key = next(f"counter:{i}" for i in range(10_000)
                   if shard_for_key(target_ring, f"counter:{i}".encode()) == "s3")
        source = shard_for_key(before, key.encode())
        stamp = {"client_id": b"retry-across-flip", "seq": 7}
        async with aiohttp.ClientSession() as session:
            old_owner = NodeConnection(before.primary_of(source).url, session)
            try:
                first = await old_owner.call("incr", {"key": key, "delta": 5, **stamp}, 10.0)
            finally:
                await old_owner.close()
        assert first["value"] == 5

        await add_shard(cluster, "s3")

        after = ClusterMap.from_dict(current_map(cluster))
        assert shard_for_key(after, key.encode()) == "s3"
        async with aiohttp.ClientSession() as session:
            new_owner = NodeConnection(after.primary_of("s3").url, session)
            try:
                retried = await new_owner.call("incr", {"key": key, "delta": 5, **stamp}, 10.0)
                current = await new_owner.call("get", {"key": key}, 10.0)
            finally:
                await new_owner.close()
        assert retried["value"] == 5, retried  # the recorded answer, not a second increment
        assert int(current["value"]) == 5
    finally:
        cluster.stop()

"""The client's read cache against a real node (client/read_cache.py, cache_stream.py): a
write from another client invalidates a cached key; this client's own writes are read back
at once; and under concurrent writers, cached eventual reads are checked by the chaos
harness's staleness checker: none older than its bound."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from eventually import eventually_async
from shardkv.chaos.checkers.staleness import check_staleness
from shardkv.chaos.history import Operation
from shardkv.client import CacheConfig, Client, SyncClient

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
BOUND_MS = 200
# The stream's delivery delay (node -> this process's watch task) is not inside the bound
# (docs/client-cache.md); on a loaded 2-core machine it stays well under this.
SLACK_MS = 100.0


async def _cached_client(url: str, **config: object) -> Client:
    kv = await Client(nodes=[url], cache=CacheConfig(**config)).connect()  # type: ignore[arg-type]

    await kv.put("cache:probe", b"p")

    async def stream_up() -> bool:
        # Served from the cache only once the stream delivered: a miss fills it then.
        await kv.get("cache:probe", consistency="eventual", max_staleness_ms=5_000)
        return kv.cache is not None and kv.cache.stats().hits > 0

    await eventually_async(stream_up, within_s=DEADLINE_S, what="the invalidation stream")
    return kv


async def test_another_clients_write_invalidates_the_cached_key(shared_node) -> None:
    reader = await _cached_client(shared_node.url, strong=True, strong_staleness_ms=500)
    try:
        async with Client(nodes=[shared_node.url]) as writer:
            first = await writer.put("cache:k", b"one")
            assert (await reader.get("cache:k")).version == first  # miss: filled
            hits = reader.cache.stats().hits
            assert (await reader.get("cache:k")).value == b"one"  # served from the cache
            assert reader.cache.stats().hits == hits + 1
            second = await writer.put("cache:k", b"two")

            async def sees_two() -> bool:
                item = await reader.get("cache:k")
                return item is not None and item.version == second

            await eventually_async(sees_two, within_s=DEADLINE_S, what="the invalidation")
            assert reader.cache.stats().invalidations >= 1
            await writer.delete("cache:k")

            async def sees_gone() -> bool:
                return await reader.get("cache:k") is None

            await eventually_async(sees_gone, within_s=DEADLINE_S, what="the delete")
    finally:
        await reader.close()


async def test_own_writes_are_read_back_at_once(shared_node) -> None:
    kv = await _cached_client(shared_node.url, strong=True, strong_staleness_ms=500)
    try:
        for i in range(20):
            version = await kv.put("cache:own", f"v{i}".encode())
            item = await kv.get("cache:own")
            assert item is not None and (item.value, item.version) == (f"v{i}".encode(),
                                                                        version)
            assert (await kv.get("cache:own")).version == version  # and from the cache
        stats = kv.cache.stats()
        assert stats.hits >= 20
    finally:
        await kv.close()


async def test_cached_reads_under_concurrent_writers_stay_within_their_bound(
        shared_node) -> None:
    keys = [f"cache:stale:{i}" for i in range(4)]
    ops: list[Operation] = []
    ids = itertools.count()
    stop = asyncio.Event()
    reader = await _cached_client(shared_node.url)

    async def write(kv: Client, process: str) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            key = keys[n % len(keys)]
            value = f"{process}-{n}"
            call = time.monotonic()
            version = await kv.put(key, value.encode())
            ops.append(Operation(next(ids), process, "write", key, value, "ok", call,
                                 time.monotonic(), version=version))
            await asyncio.sleep(0.02)  # paced: reads between writes can hit the cache

    async def read(process: str) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            key = keys[n % len(keys)]
            call = time.monotonic()
            item = await reader.get(key, consistency="eventual", max_staleness_ms=BOUND_MS)
            ops.append(Operation(
                next(ids), process, "read", key, None, "ok", call, time.monotonic(),
                output=None if item is None else item.value.decode(),
                version=None if item is None else item.version, consistency="eventual",
                max_staleness_ms=BOUND_MS))
            await asyncio.sleep(0.002)

    try:
        async with Client(nodes=[shared_node.url]) as w1, \
                Client(nodes=[shared_node.url]) as w2:
            tasks = [asyncio.create_task(write(w1, "w1")), asyncio.create_task(write(w2, "w2")),
                     asyncio.create_task(read("r1")), asyncio.create_task(read("r2"))]
            await asyncio.sleep(3.0)  # the run's length, not a wait for something
            stop.set()
            await asyncio.gather(*tasks)
        stats = reader.cache.stats()
    finally:
        await reader.close()
    result = check_staleness(ops, slack_ms=SLACK_MS)
    assert result.verdict == "ok", (result.anomalies[:3], result.unknowns[:3])
    print("cache staleness:", result.stats, stats)
    reads = [op for op in ops if op.f == "read"]
    assert result.stats["eventual_reads_checked"] == len(reads) > 100
    assert stats.hits > 100 and stats.misses > 100  # both paths ran under the load
    assert stats.invalidations > 10


def test_the_sync_client_takes_a_cache_too(shared_node) -> None:
    with SyncClient(nodes=[shared_node.url], cache=CacheConfig()) as kv:
        version = kv.put("cache:sync", b"s")
        deadline = time.monotonic() + DEADLINE_S
        while kv.cache is not None and kv.cache.stats().hits == 0:  # until the stream is up
            assert time.monotonic() < deadline, "the sync client's cache never served"
            item = kv.get("cache:sync", consistency="eventual", max_staleness_ms=5_000)
            assert item is not None and item.version == version
        assert kv.cache is not None and kv.cache.stats().hit_ratio > 0

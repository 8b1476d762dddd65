"""Key watch on a real local cluster (3 coordinators, 2 shards x 3 members): a prefix watch
under a write load while a primary is SIGKILLed. The events received are the acknowledged
writes, each exactly once, per key in write order, with no gap, across the failover."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from cluster_fixtures import local_cluster_fixture, wait_until  # noqa: F401
from shardkv.client import Client, Retry, ShardKVError, WatchEvent
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.ring import shard_for_key

pytestmark = [pytest.mark.integration]

KEYS = 24
WRITES = 300
KILL_AT = 120


async def test_prefix_watch_sees_every_acknowledged_write_once_across_a_primary_kill(
        local_cluster: LocalCluster) -> None:
    retry = Retry(ExponentialBackoff(base=0.05, cap=0.5), retries=400)
    async with Client(local_cluster.plan.coordinator_urls(), retry=retry, timeout=60.0) as kv, \
            Client(local_cluster.plan.coordinator_urls()) as watcher:
        cmap = kv.cluster_map.copy()
        received: list[WatchEvent] = []
        caught_up: dict[str, int] = {}

        async def watch() -> None:
            async for event in watcher.watch(prefix="w:", progress=True):
                if event.type == "progress":
                    caught_up[event.shard] = event.version
                else:
                    received.append(event)

        watching = asyncio.create_task(watch())
        await wait_until(lambda: len(caught_up) == len(cmap.shards), within=60,
                         what="every shard's watch to be live")
        acked: list[tuple[str, bytes, int]] = []  # (shard, value, version) per key below
        acked_keys: list[bytes] = []
        unknown: set[bytes] = set()
        victim = cmap.shards["s1"].primary
        for i in range(WRITES):
            if i == KILL_AT:
                local_cluster.kill(victim)
            key = f"w:{i % KEYS:03d}".encode()
            value = f"{i}".encode()
            try:
                version = await kv.put(key, value)
            except ShardKVError:
                unknown.add(value)  # its outcome is not known: it may or may not show
                continue
            acked.append((shard_for_key(cmap, key), value, version))
            acked_keys.append(key)
        last = {}
        for shard, _, version in acked:
            last[shard] = max(last.get(shard, 0), version)
        await wait_until(lambda: all(caught_up.get(s, 0) >= v for s, v in last.items()),
                         within=90, what="the watch to catch up with every shard")
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

        assert kv.cluster_map.shards["s1"].primary != victim  # the failover happened
        seen = [(e.shard, e.version, e.key) for e in received]
        assert len(seen) == len(set(seen)), "an event was delivered twice"
        by_write = {(e.key, e.value, e.version): e for e in received}
        for key, (shard, value, version) in zip(acked_keys, acked, strict=True):
            event = by_write.get((key, value, version))
            assert event is not None, f"acknowledged write {key!r}={value!r} @{version} missing"
            assert event.type == "put" and event.shard == shard
        extra = [e for e in received if (e.key, e.value, e.version) not in
                 {(k, v, ver) for k, (_, v, ver) in zip(acked_keys, acked, strict=True)}]
        assert all(e.value in unknown for e in extra), extra
        per_key: dict[bytes, list[int]] = {}
        for e in received:
            per_key.setdefault(e.key, []).append(int(e.value))
        for key, order in per_key.items():
            assert order == sorted(order), f"{key!r} out of write order: {order}"
    local_cluster.restart_dead()

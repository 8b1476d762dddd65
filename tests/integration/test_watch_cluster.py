"""Key watch on a real local cluster (3 coordinators, 2 shards x 3 members): a prefix watch
under a write load while a primary is SIGKILLed. The events received are the acknowledged
writes, each exactly once, per key in write order, with no gap, across the failover (checked
by chaos/checkers/watch_events.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys

import pytest
from cluster_fixtures import local_cluster_fixture, wait_until  # noqa: F401
from shardkv.chaos.checkers.watch_events import (
    ReceivedEvent,
    WatchedWrite,
    check_watch_events,
)
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
        writes: list[WatchedWrite] = []
        victim = cmap.shards["s1"].primary
        for i in range(WRITES):
            if i == KILL_AT:
                local_cluster.kill(victim)
            key = f"w:{i % KEYS:03d}".encode()
            value = f"{i}".encode()
            shard = shard_for_key(cmap, key)
            try:
                version: int | None = await kv.put(key, value)
            except ShardKVError:
                version = None  # its outcome is not known: it may or may not show
            writes.append(WatchedWrite(key, value, shard, version))
        last: dict[str, int] = {}
        for w in writes:
            if w.version is not None:
                last[w.shard] = max(last.get(w.shard, 0), w.version)
        await wait_until(lambda: all(caught_up.get(s, 0) >= v for s, v in last.items()),
                         within=90, what="the watch to catch up with every shard")
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

        assert kv.cluster_map.shards["s1"].primary != victim  # the failover happened
        result = check_watch_events(writes, [
            ReceivedEvent(e.key or b"", e.value, e.version, e.shard, e.type) for e in received])
        assert result.verdict == "ok", result.anomalies[:10]
        assert result.stats["acknowledged"] >= WRITES - 10
        per_key: dict[bytes, list[int]] = {}
        for e in received:  # one writer: per key, values grow in write order
            per_key.setdefault(e.key or b"", []).append(int(e.value or b"0"))
        for key, order in per_key.items():
            assert order == sorted(order), f"{key!r} out of write order: {order}"
    local_cluster.restart_dead()


def test_cli_events_follows_every_node_of_the_map(local_cluster: LocalCluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shardkv.cluster.cli", "events", "--coordinator",
         ",".join(local_cluster.plan.coordinator_urls()), "--interval-ms", "200",
         "--categories", "replication", "--json", "--count", "30"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    nodes = {e["node"] for e in events if e["type"] == "replication.sample"}
    assert len(nodes) >= 4, nodes  # 6 nodes feed at once; most show within 30 events
    assert {e["role"] for e in events if e["type"] == "replication.sample"} >= {"primary",
                                                                              "replica"}

"""Watches across resharding, on real processes (1 coordinator, shards of 1 member): 4
writers keep putting and deleting keys under ``w:`` while a shard is added (2 -> 3) or
removed (3 -> 2). A prefix watch and a key watch of a key that moves are open throughout.
The prefix watch's events are exactly the acknowledged writes, once each, per key in version
order, and nothing else: not the copy the targets import, not the sources' clean-up deletes
(checked by chaos/checkers/watch_events.py, for which such events are phantoms); the key
watch sees the same events for its key, from both shards. After the add, a watch replayed
from version 0 (history across the flip) gets the same events again, and the dashboard's
prefix watch (the coordinator's ``/ui/api/watch``) has forwarded the same writes, once each,
with no copy or clean-up either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster_fixtures import started_cluster, wait_until
from shardkv.chaos.checkers.watch_events import (
    ReceivedEvent,
    WatchedWrite,
    check_watch_events,
)
from shardkv.client import Client, Retry, ShardKVError, WatchEvent
from shardkv.client.retry import ExponentialBackoff
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.ring import shard_for_key
from test_resharding_add import add_shard, send, wait_finished

pytestmark = [pytest.mark.integration]

WRITERS = 4
KEYS_PER_WRITER = 12


class Writers:
    """Writers of unique values (every 5th write of a key is a delete), one per key set, so
    per key the write order is the version order."""

    def __init__(self, kv: Client) -> None:
        self.kv = kv
        self.writes: list[tuple[bytes, bytes | None, int | None]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def keys() -> list[bytes]:
        return [f"w:{w}:{i:02d}".encode() for w in range(WRITERS) for i in range(KEYS_PER_WRITER)]

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(WRITERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _write(self, writer: int) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"w:{writer}:{i % KEYS_PER_WRITER:02d}".encode()
            value: bytes | None = None if i % 5 == 4 else f"{writer}-{i}".encode()
            try:
                if value is None:  # a delete of an absent key may write nothing: unknown
                    deleted = await self.kv.delete(key)
                    version: int | None = deleted.version if deleted else None
                else:
                    version = await self.kv.put(key, value)
            except ShardKVError:
                version = None  # outcome unknown: may or may not show
            self.writes.append((key, value, version))
            i += 1
            await asyncio.sleep(0.002)


async def record_watch(watcher: Client, received: list[WatchEvent],
                       caught_up: dict[str, int], **what: Any) -> None:
    async for event in watcher.watch(progress=True, **what):
        if event.type != "progress":
            received.append(event)
        # (a shard that left the ring sends no progress once let go: count events too)
        caught_up[event.shard] = max(caught_up.get(event.shard, 0), event.version)


async def record_dashboard_watch(url: str, forwarded: list[tuple[bytes, int]],
                                 opened: asyncio.Event) -> None:
    """What the dashboard's watch of ``w:`` forwards, as (key, version) pairs."""
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{url}/ui/api/watch?prefix=w:") as ws:
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "created":
                opened.set()
            elif frame["type"] == "watch":
                forwarded.extend((e["key"].encode(), e["version"]) for e in frame["events"])


async def watch_through(cluster: LocalCluster, new_ring: dict[str, int],
                        change: Callable[[], Awaitable[dict[str, Any]]], *,
                        replay: bool = False) -> None:
    """Watch ``w:`` (and one key that moves) while writers write and ``change`` reshapes
    the ring into ``new_ring`` (it returns the migration's record); then check the events
    against the acknowledged writes. With ``replay``, a watch opened afterwards from version
    0 (history across the flip, read from the logs) must see the same events."""
    coordinator = cluster.plan.coordinator_urls()[0]
    retry = Retry(ExponentialBackoff(base=0.02, cap=0.3), retries=400)
    async with Client([coordinator], retry=retry, timeout=30.0) as kv, \
            Client([coordinator]) as watcher:
        before = kv.cluster_map.copy()
        target = before.copy()
        target.ring.shards = dict(new_ring)
        moving = next(k for k in Writers.keys()
                      if shard_for_key(before, k) != shard_for_key(target, k))
        received: list[WatchEvent] = []
        caught_up: dict[str, int] = {}
        on_key: list[WatchEvent] = []
        key_caught_up: dict[str, int] = {}
        watching = asyncio.create_task(record_watch(watcher, received, caught_up,
                                                    prefix="w:"))
        forwarded: list[tuple[bytes, int]] = []
        dashboard_open = asyncio.Event()
        dashboard = asyncio.create_task(record_dashboard_watch(coordinator, forwarded,
                                                               dashboard_open))
        await asyncio.wait_for(dashboard_open.wait(), 20)
        key_watch = asyncio.create_task(record_watch(watcher, on_key, key_caught_up,
                                                     key=moving))
        await wait_until(lambda: len(caught_up) == len(before.ring.shards) and key_caught_up,
                         within=20, what="the watches to be live")
        writers = Writers(kv)
        writers.start()
        await wait_until(lambda: len(writers.writes) > 60, within=20, what="writes")
        record = await change()
        assert record["keys_moved"] > 0 and record["flip_lsns"], record
        count = len(writers.writes)
        await wait_until(lambda: len(writers.writes) > count + 60, within=20,
                         what="writes after the move")
        await writers.stop()

        floor = int(record["lsn_floor"])
        writes = watched_writes(writers, before, kv.cluster_map.copy(), floor)
        await wait_caught_up(watching, caught_up, writes, within=30)
        last_of_key = max(w.version or 0 for w in writes if w.key == moving)
        await wait_until(lambda: max([e.version for e in on_key], default=0) >= last_of_key,
                         within=30, what="the key watch to catch up")
        acked = {(w.key, w.version) for w in writes if w.version is not None}
        if replay:  # the dashboard follows the shard that joined: every write, once
            await wait_until(lambda: acked <= set(forwarded), within=30,
                             what="the dashboard's watch to forward every write")
            assert len(forwarded) == len(set(forwarded)), "a write forwarded twice"
            assert set(forwarded) <= {(e.key, e.version) for e in received}, \
                "the dashboard forwarded a migration's copy or clean-up"
        replayed: list[WatchEvent] = []
        tasks = [watching, key_watch, dashboard]
        if replay:
            tasks.append(asyncio.create_task(record_watch(watcher, replayed, {}, prefix="w:",
                                                          start_version=0)))
            await wait_until(lambda: acked <= {(e.key, e.version) for e in replayed},
                             within=30, what="the replay to deliver every write")
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    result = check_watch_events(writes, [
        ReceivedEvent(e.key or b"", e.value, e.version, e.shard, e.type) for e in received])
    assert result.verdict == "ok", result.anomalies[:10]
    moved = {w.key for w in writes if w.version is not None and w.version > floor}
    assert moved, "no key was written on its new owner after the flip"
    assert any(e.key in moved and e.version < floor for e in received)  # seen on both sides
    # The key watch moved with its key: the same events as the prefix watch's, both sides.
    assert on_key == [e for e in received if e.key == moving]
    assert {e.version > floor for e in on_key} == {True, False}, on_key
    if replay:  # history across the flip: no copy, no clean-up, same order per key
        again = check_watch_events(writes, [
            ReceivedEvent(e.key or b"", e.value, e.version, e.shard, e.type) for e in replayed])
        assert again.verdict == "ok", again.anomalies[:10]

        def per_key(events: list[WatchEvent]) -> dict[bytes | None, list[Any]]:
            out: dict[bytes | None, list[Any]] = {}
            for e in events:
                if (e.key, e.version) in acked:  # (a write of unknown outcome may lag)
                    out.setdefault(e.key, []).append((e.version, e.type, e.value))
            return out
        assert per_key(replayed) == per_key(received)


async def test_prefix_watch_follows_a_shard_add_under_writes(tmp_path: Path) -> None:
    with started_cluster(tmp_path, shards=2, replicas=1, coordinators=1, engine="memory",
                         fsync="never") as cluster:
        await watch_through(cluster, {"s1": 1, "s2": 1, "s3": 1},
                            lambda: add_shard(cluster, "s3"), replay=True)


async def test_prefix_watch_follows_a_shard_remove_under_writes(tmp_path: Path) -> None:
    with started_cluster(tmp_path, shards=3, replicas=1, coordinators=1, engine="memory",
                         fsync="never") as cluster:
        await watch_through(cluster, {"s1": 1, "s3": 1}, lambda: remove_shard(cluster, "s2"))


async def remove_shard(cluster: LocalCluster, shard: str) -> dict[str, Any]:
    coordinator = cluster.plan.coordinator_urls()[0]
    status, body = await asyncio.to_thread(send, "DELETE", f"{coordinator}/admin/shards/{shard}")
    assert status == 202, body
    record = await wait_finished(coordinator, body["migration"])
    assert record["state"] == "done", record
    return record


def watched_writes(writers: Writers, before: ClusterMap, after: ClusterMap,
                   floor: int) -> list[WatchedWrite]:
    """The writers' writes, each with the shard that took it."""
    return [WatchedWrite(key, value, owner(before, after, key, version, floor), version)
            for key, value, version in writers.writes]


async def wait_caught_up(watching: asyncio.Task[None], caught_up: dict[str, int],
                         writes: list[WatchedWrite], *, within: float) -> None:
    """Until the watch reported every shard up to its last acknowledged write (raises the
    watch's error if it failed)."""
    last: dict[str, int] = {}
    for w in writes:
        if w.version is not None:
            last[w.shard] = max(last.get(w.shard, 0), w.version)

    def caught_up_with_writes() -> bool:
        if watching.done():
            watching.result()  # the watch failed: raise its error here
        return all(caught_up.get(s, 0) >= v for s, v in last.items())

    await wait_until(caught_up_with_writes, within=within,
                     what=f"the watch to catch up with every shard: {last}")


def owner(before: ClusterMap, after: ClusterMap, key: bytes, version: int | None,
          floor: int) -> str:
    """The shard that took a write: a version above the migration's floor was written by
    the key's owner after the flip (every target's log is above it), any other by its
    owner before."""
    if version is not None and version > floor:
        return shard_for_key(after, key)
    return shard_for_key(before, key)

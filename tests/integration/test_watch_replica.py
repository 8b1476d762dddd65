"""Eventual watches served by replicas, with real processes (one coordinator, one shard of
three nodes): the watch sees every acknowledged write exactly once, per key in order, and
moves to another member with no gap or duplicate when its replica is paused (SIGSTOP: it
goes silent) or cut off from its primary (the replica's stream stalls: it closes the watch
with ``TOO_STALE`` itself). Events carry ``prev_version``, the version each write replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from replicated_shard import (  # noqa: F401  (``shard`` is the fixture)
    NodeProcess,
    Shard,
    async_value,
    patient_client,
    shard,
    until,
)
from shardkv.chaos.checkers.watch_events import (
    ReceivedEvent,
    WatchedWrite,
    check_watch_events,
)
from shardkv.client import Client, ShardKVError, WatchEvent

pytestmark = pytest.mark.integration

BOUND_MS = 400
KEYS = 8


async def watch_sessions(cluster: Shard, node: NodeProcess) -> int:
    """The node's open ``/v1/watch`` sockets (``shardkv_watch_sessions``)."""
    try:
        async with cluster.http.get(f"{node.url}/metrics",
                                  timeout=aiohttp.ClientTimeout(total=1)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0
    for line in text.splitlines():
        if line.startswith("shardkv_watch_sessions "):
            return int(float(line.split()[1]))
    return 0


async def serving(cluster: Shard, exclude: set[str]) -> NodeProcess | None:
    for node in cluster.nodes:
        if node.url not in exclude and await watch_sessions(cluster, node) > 0:
            return node
    return None


class Recorder:
    """One eventual prefix watch, its events and how far each shard is known caught up."""

    def __init__(self, client: Client) -> None:
        self.events: list[WatchEvent] = []
        self.caught_up = 0
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: Client) -> None:
        async for event in client.watch(prefix="rw:", progress=True, consistency="eventual",
                                        max_staleness_ms=BOUND_MS):
            if event.type == "progress":
                self.caught_up = max(self.caught_up, event.version)
            else:
                self.events.append(event)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def write(kv: Client, writes: list[WatchedWrite], n: int) -> int:
    """``n`` more writes of ``rw:*``; the last acknowledged version."""
    last = 0
    for _ in range(n):
        i = len(writes)
        key, value = f"rw:{i % KEYS}".encode(), str(i).encode()
        try:
            version: int | None = await kv.put(key, value)
        except ShardKVError:
            version = None  # outcome unknown: it may or may not show
        writes.append(WatchedWrite(key, value, "s1", version))
        last = max(last, version or 0)
    return last


def check(writes: list[WatchedWrite], events: list[WatchEvent]) -> None:
    result = check_watch_events(writes, [
        ReceivedEvent(e.key or b"", e.value, e.version, e.shard, e.type) for e in events])
    assert result.verdict == "ok", result.anomalies[:10]
    previous: dict[bytes, int] = {}
    for e in events:  # one writer: per key, each event replaced the one before it
        assert e.prev_version == previous.get(e.key or b""), (e, previous)
        previous[e.key or b""] = e.version


async def test_a_replica_serves_the_watch_and_a_paused_one_is_left_without_loss(
        shard: Shard) -> None:  # noqa: F811
    primary_id, primary, _ = await shard.primary()
    writes: list[WatchedWrite] = []
    async with patient_client(shard) as kv, Client([shard.coordinator_url]) as watcher:
        recorder = Recorder(watcher)
        await until(async_value(lambda: recorder.caught_up > 0), 15, "the watch to be live")
        first = await until(lambda: serving(shard, set()), 10, "a member serving the watch")
        assert first.url != primary.url  # an eventual watch is served by a replica
        last = await write(kv, writes, 30)
        await until(async_value(lambda: recorder.caught_up >= last), 10, "the first writes")
        first.pause()
        try:
            last = await write(kv, writes, 30)
            # Only another member can bring the watch up to date while this one is frozen.
            await until(async_value(lambda: recorder.caught_up >= last), 15,
                        "the watch to move off the paused replica")
        finally:
            first.resume()
        last = await write(kv, writes, 20)
        await until(async_value(lambda: recorder.caught_up >= last), 15, "the last writes")
        await recorder.stop()
    assert sum(w.version is not None for w in writes) >= 75
    check(writes, recorder.events)
    assert primary_id  # the shard kept its primary: the moves were the watch's own


async def test_a_replica_cut_off_from_its_primary_closes_the_watch_too_stale(
        shard: Shard) -> None:  # noqa: F811
    _, primary, cluster_map = await shard.primary()
    replicas = [n for n in shard.nodes if n.url != primary.url]
    writes: list[WatchedWrite] = []
    async with patient_client(shard) as kv, Client([shard.coordinator_url]) as watcher:
        recorder = Recorder(watcher)
        await until(async_value(lambda: recorder.caught_up > 0), 15, "the watch to be live")
        await write(kv, writes, 10)
        lagging = replicas[0]
        # A raw eventual watch on the replica about to be cut off: it must end with a
        # retryable TOO_STALE from the node (not silence, not old data as fresh).
        url = f"{lagging.url}/v1/watch?consistency=eventual&max_staleness_ms={BOUND_MS}"
        async with shard.http.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"prefix": "rw:"}))
            created = json.loads((await ws.receive(timeout=10)).data)
            assert created["type"] == "created", created
            await set_stalled(shard, lagging, True)
            try:
                last = await write(kv, writes, 30)
                final = await last_frame(ws)
                assert final["type"] == "error", final
                assert (final["error"], final["retryable"]) == ("TOO_STALE", True), final
                await until(async_value(lambda: recorder.caught_up >= last), 15,
                            "the client's watch to be served elsewhere")
            finally:
                await set_stalled(shard, lagging, False)
        async with shard.http.ws_connect(f"{lagging.url}/v1/watch") as ws:  # strong
            await ws.send_str(json.dumps({"prefix": "rw:"}))
            refused = json.loads((await ws.receive(timeout=10)).data)
            assert refused["error"] == "NOT_PRIMARY", refused
        last = await write(kv, writes, 10)
        await until(async_value(lambda: recorder.caught_up >= last), 15, "the last writes")
        await recorder.stop()
    check(writes, recorder.events)
    assert cluster_map.shards["s1"].primary  # the same shard throughout


async def set_stalled(cluster: Shard, node: NodeProcess, stalled: bool) -> None:
    """Hold the replica's stream before it applies anything (its primary is out of reach
    for it), or let it go."""
    async with cluster.http.put(f"{node.url}/admin/failpoints/replica_before_apply",
                              data=b"pause" if stalled else b"off") as resp:
        assert resp.status == 200, await resp.text()


async def last_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """Read until the node closes; the last frame it sent."""
    frame: dict[str, Any] = {}
    while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
        frame = json.loads(msg.data)
    return frame

"""The fence waits for a write that passed its check before the map showed the migration
(issue 12's lost acknowledged write, made deterministic), both engines.

The race it pins down: a source primary only counted the writes in flight to keys it knew
were moving, that is from the first map that showed the migration. A put that passed the
check just before (then waited for a SQLite read or the store lock, which a loaded machine
stretches) was not waited for by the fence: it was ordered after the fenced LSN, never
shipped to the target, acknowledged by the source, and lost with the flip
(``test_resharding_remove.py``, sqlite, under load: about 1 run in 14).

Here the failpoint ``put_before_order`` holds such a put on the source (s2) while
``PUT /admin/shards/s1/weight`` moves its key to s1. The put is released once the source's
fence is draining (fixed: it waits for it) or once the ring has flipped without it (the
bug); either way it must then be acknowledged and readable from the new owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster_fixtures import current_map, started_cluster
from shardkv.client import Client
from shardkv.client.connection import NodeConnection
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.launcher import LocalCluster
from shardkv.cluster.ring import shard_for_key
from test_resharding_add import MIGRATION_TIMEOUT_S, send, wait_finished

pytestmark = [pytest.mark.integration]

FAILPOINT = "put_before_order"


@pytest.fixture(params=["memory", "sqlite"], name="cluster")
def cluster_fixture(request: pytest.FixtureRequest, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("SHARDKV_TEST_ADMIN", "1")  # the failpoint routes
    # The held put must not hit the node's write timeout while the migration runs.
    monkeypatch.setenv("SHARDKV_WRITE_TIMEOUT_S", "120")
    with started_cluster(tmp_path, shards=2, replicas=1, coordinators=1,
                         engine=request.param, fsync="never") as cluster:
        yield cluster


def moving_key(before: ClusterMap, target_weights: dict[str, int]) -> str:
    """A key s2 owns now and s1 owns under ``target_weights``."""
    after = before.copy()
    after.ring.shards = dict(target_weights)
    keys = (f"k:{i}" for i in range(100_000))
    return next(key for key in keys if shard_for_key(before, key.encode()) == "s2"
                and shard_for_key(after, key.encode()) == "s1")


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def set_failpoint(session: aiohttp.ClientSession, node_url: str, action: str) -> None:
    async with session.put(f"{node_url}/admin/failpoints/{FAILPOINT}", data=action) as resp:
        assert resp.status == 200, await resp.text()


async def held_or_flipped(session: aiohttp.ClientSession, coordinator: str, source: str,
                          migration: str) -> str:
    """``"held"`` once the source's fence drains with a write in flight, ``"flipped"`` once
    the migration went past its flip without waiting (the bug)."""
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while True:
        export = await get_json(session, f"{source}/internal/migration/export")
        fence = export.get("fence") or {}
        if fence.get("draining") and fence.get("writes_in_flight", 0) >= 1:
            return "held"
        record = await get_json(session, f"{coordinator}/admin/migrations/{migration}")
        if record["state"] in ("cleaning", "done", "aborted", "failed"):
            return "flipped"
        assert time.monotonic() < deadline, (record, export)
        await asyncio.sleep(0.05)


async def test_the_fence_waits_for_a_write_from_before_the_migration(
        cluster: LocalCluster) -> None:
    coordinator = cluster.plan.coordinators[0].url
    before = ClusterMap.from_dict(current_map(cluster))
    key = moving_key(before, {"s1": 3, "s2": 1})
    source = before.primary_of("s2")
    assert source is not None
    async with Client([coordinator]) as kv, aiohttp.ClientSession() as session:
        await kv.put(key, b"before")
        await set_failpoint(session, source.url, "1*pause")
        conn = NodeConnection(source.url, session)
        try:
            put = asyncio.create_task(conn.call("put", {"key": key, "value": b"after"}, 120.0))

            async def hits() -> int:
                listed = await get_json(session, f"{source.url}/admin/failpoints")
                return int(listed["hits"].get(FAILPOINT, 0))

            deadline = time.monotonic() + 30
            while await hits() < 1:
                assert time.monotonic() < deadline, "the put never reached the failpoint"
                await asyncio.sleep(0.05)

            status, body = await asyncio.to_thread(
                send, "PUT", f"{coordinator}/admin/shards/s1/weight", {"weight": 3})
            assert status == 202, body
            outcome = await held_or_flipped(session, coordinator, source.url,
                                            body["migration"])
            await set_failpoint(session, source.url, "off")
            answer = await put  # acknowledged by the source...
            assert answer["version"] > 0
        finally:
            await conn.close()
        record = await wait_finished(coordinator, body["migration"])
        assert record["state"] == "done", record
        after = ClusterMap.from_dict(current_map(cluster))
        assert shard_for_key(after, key.encode()) == "s1"
        item = await kv.get(key)  # ... so readable from the new owner
        assert item is not None and item.value == b"after", (outcome, item)
        assert outcome == "held"

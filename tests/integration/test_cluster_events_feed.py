"""``GET /v1/events`` on coordinators and the dashboard's data routes, on a real secured
cluster (3 coordinators, 2 shards x 2): a failover reaches the feeds of the leader and of a
follower as it happens, with the old and new primary and the epoch, and so does the dead
node's liveness (read from the leader's failure detector); the feed and the key
browser refuse strangers (no token, a wrong one, another site's page) while the page itself
is public; ``shardkv events`` prints the coordinators' events; a shard added online shows
its migration (started, its states, done) and the ring change on a follower's feed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from eventually import eventually_async
from secured_cluster import SecuredCluster, secured_cluster_fixture  # noqa: F401
from shardkv.client import Client
from shardkv.cluster.shard_members import start_shard_members

pytestmark = pytest.mark.integration

COORDINATORS = 3
DEADLINE_S = 60.0


async def _next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE_S):
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == kind:
                return event
    raise AssertionError(f"the feed closed before a {kind} event")


async def _until(ws: aiohttp.ClientWebSocketResponse,
                 *wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Read the feed until an event matching each predicate arrived; those events, in the
    predicates' order."""
    found: list[dict[str, Any] | None] = [None] * len(wanted)
    async with asyncio.timeout(DEADLINE_S):
        async for msg in ws:
            event = json.loads(msg.data)
            for i, predicate in enumerate(wanted):
                if found[i] is None and predicate(event):
                    found[i] = event
            if all(f is not None for f in found):
                return [f for f in found if f is not None]
    raise AssertionError(f"the feed closed before {found}")


async def test_a_failover_reaches_the_leaders_and_a_followers_feed(
        secured_cluster: SecuredCluster) -> None:
    leader, follower = secured_cluster.leader_and_follower()
    assert follower is not None
    before = secured_cluster.current_map()
    old_primary = before.shards["s1"].primary
    assert old_primary is not None
    async with aiohttp.ClientSession() as http:
        feeds = [await http.ws_connect(f"{url}/v1/events", headers=secured_cluster.auth)
                 for url in (leader, follower)]
        # The follower's feed authenticates by its first frame, as a browser's does.
        token_feed = await http.ws_connect(f"{follower}/v1/events")
        await token_feed.send_str(json.dumps({"token": secured_cluster.admin_token}))
        feeds.append(token_feed)
        for ws in feeds:
            snapshot = await _next_of(ws, "cluster.snapshot")
            assert snapshot["map"]["shards"]["s1"]["primary"] == old_primary
        secured_cluster.cluster.kill(old_primary)
        failovers = []
        for ws in feeds:
            seen = await _until(ws, lambda e: e["type"] == "shard.failover", lambda e: (
                e["type"] == "node.liveness" and e["node"] == old_primary
                and e["liveness"] in ("suspect", "dead")))
            failovers.append(seen[0])
            await ws.close()
    first = failovers[0]
    assert first["shard"] == "s1" and first["old_primary"] == old_primary
    assert first["new_primary"] not in (None, old_primary)
    assert first["epoch"] == before.shards["s1"].epoch + 1
    # The same event, derived from the same Raft-applied map, on every coordinator.
    strip = [{k: v for k, v in e.items() if k != "time"} for e in failovers]
    assert strip[0] == strip[1] == strip[2]
    # Replayed from the kept history for a feed that asks for what followed an older map.
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{follower}/v1/events?since={before.version}",
            headers=secured_cluster.auth) as ws:
        replayed = await _next_of(ws, "shard.failover")
    assert {k: v for k, v in replayed.items() if k != "time"} == strip[0]
    secured_cluster.cluster.restart(old_primary)


async def test_strangers_get_the_page_but_not_the_data(
        secured_cluster: SecuredCluster) -> None:
    url = secured_cluster.coordinator_urls[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/ui") as page:
            assert page.status == 200
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            assert "shardkv" in await page.text()
        for path in ("/ui/api/scan?prefix=", "/ui/api/key?key=a"):
            async with http.get(f"{url}{path}") as refused:
                assert refused.status == 401, path
            async with http.get(f"{url}{path}", headers={
                    "Authorization": "Bearer not-the-token"}) as refused:
                assert refused.status == 401, path

        async def scanned() -> dict | None:
            # The previous test's failover may still be settling: retryable answers pass.
            async with http.get(f"{url}/ui/api/scan?prefix=",
                                headers=secured_cluster.auth) as allowed:
                body = await allowed.json()
                assert allowed.status == 200 or body["retryable"], body
                return body if allowed.status == 200 else None

        assert "items" in await eventually_async(scanned, within_s=DEADLINE_S,
                                                 what="an authenticated scan")
        for feed in ("/v1/events", "/ui/api/watch?prefix="):
            async with http.ws_connect(f"{url}{feed}") as ws:
                await ws.send_str(json.dumps({"token": "wrong"}))
                error = await _next_of(ws, "error")
                assert error["error"] == "UNAUTHORIZED", feed
        async with http.get(f"{url}/ui/api/watch", params={"prefix": "p" * 2000},
                            headers=secured_cluster.auth) as too_long:
            assert too_long.status == 400
            assert (await too_long.json())["error"] == "INVALID_ARGUMENT"
        async with http.get(f"{url}/ui/api/scan?prefix=&limit=100000000",
                            headers=secured_cluster.auth) as unbounded:
            assert unbounded.status == 400  # an answer is bounded: the limit is capped
        for feed in ("/v1/events", "/ui/api/watch?prefix=x"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused_ws:
                await http.ws_connect(f"{url}{feed}", headers={
                    "Origin": "http://evil.example", **secured_cluster.auth})
            assert refused_ws.value.status == 403
        async with http.get(f"{url}/v1/events?since=-3") as bad:
            assert bad.status == 400
            assert (await bad.json())["error"] == "INVALID_ARGUMENT"


async def test_the_key_browser_scans_gets_and_watches(secured_cluster: SecuredCluster) -> None:
    url = secured_cluster.coordinator_urls[0]
    async with Client(secured_cluster.coordinator_urls) as kv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}/ui/api/watch?prefix=kb:") as watch:
            await watch.send_str(json.dumps({"token": secured_cluster.admin_token}))
            created = await _next_of(watch, "created")
            assert created["shards"] == ["s1", "s2"]  # every node watch is open
            versions = {f"kb:{i}": await kv.put(f"kb:{i}", f"v{i}".encode()) for i in range(6)}
            seen: dict[str, int] = {}
            async with asyncio.timeout(DEADLINE_S):
                while len(seen) < len(versions):
                    frame = await _next_of(watch, "watch")
                    seen |= {e["key"]: e["version"] for e in frame["events"]}
        assert seen == versions
        async with http.get(f"{url}/ui/api/scan?prefix=kb:&limit=4",
                            headers=secured_cluster.auth) as answer:
            page = await answer.json()
        assert [i["key"] for i in page["items"]] == ["kb:0", "kb:1", "kb:2", "kb:3"]
        assert page["more"] is True
        async with http.get(f"{url}/ui/api/key?key=kb:5",
                            headers=secured_cluster.auth) as answer:
            item = await answer.json()
        assert (item["value"], item["version"]) == ("v5", versions["kb:5"])


def test_cli_events_prints_the_coordinators_events(secured_cluster: SecuredCluster) -> None:
    before = secured_cluster.current_map()
    victim = before.shards["s2"].primary
    assert victim is not None
    secured_cluster.cluster.kill(victim)
    try:
        # --since: what followed that map, replayed from the coordinators' kept history.
        done = subprocess.run(
            [sys.executable, "-m", "shardkv.cluster.cli", "events", "--cluster-only",
             "--json", "--since", str(before.version), "--types", "shard.failover",
             "--count", "1",
             "--coordinator", ",".join(secured_cluster.coordinator_urls)],
            capture_output=True, text=True, timeout=DEADLINE_S, env=dict(os.environ))
    finally:
        secured_cluster.cluster.restart(victim)
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout.splitlines()[0])
    assert event["type"] == "shard.failover" and event["shard"] == "s2"
    assert event["old_primary"] == victim and event["map_version"] > before.version


async def test_a_shard_add_shows_its_migration_on_a_followers_feed(
        secured_cluster: SecuredCluster) -> None:
    _leader, follower = secured_cluster.leader_and_follower()
    assert follower is not None
    types = "migration.started,migration.progress,migration.state,ring.changed,shard.added"
    async with Client(secured_cluster.coordinator_urls) as kv:
        for i in range(200):
            await kv.put(f"mig:{i}", b"x" * 100)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{follower}/v1/events?types={types}",
                                   headers=secured_cluster.auth) as ws:
            await _next_of(ws, "cluster.snapshot")
            async with http.post(f"{follower}/admin/shards", json={"shard": "s3"},
                                 headers=secured_cluster.auth) as answer:
                body = await answer.json()
                assert answer.status == 202, body
            start_shard_members(secured_cluster.cluster, "s3")
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(120.0):
                async for msg in ws:
                    event = json.loads(msg.data)
                    seen.append(event)
                    if event["type"] == "migration.state" and event["state"] in (
                            "done", "aborted", "failed"):
                        break
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "shard.added" and "migration.started" in kinds, kinds
    assert all(e.get("migration") == body["migration"] for e in seen
               if e["type"].startswith("migration."))
    assert seen[-1]["state"] == "done", seen[-1]
    states = [e["state"] for e in seen if e["type"] == "migration.state"]
    assert states[-1] == "done" and len(states) >= 2, states  # it went through its steps
    ring = next(e for e in seen if e["type"] == "ring.changed")
    assert "s3" in ring["shards"] and "s3" not in ring["before_shards"]

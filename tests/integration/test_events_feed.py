"""``GET /v1/events`` on a real standalone node: storage and replication samples at the
interval asked for, a snapshot event, and refused queries (400 INVALID_ARGUMENT)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest
from shardkv.client import Client

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


async def test_samples_and_a_snapshot_event(node) -> None:
    async with aiohttp.ClientSession() as http, Client(nodes=[node.url]) as kv:
        async with http.ws_connect(f"{node.url}/v1/events?interval_ms=200") as ws:
            seen: list[dict] = []
            await kv.put("e:1", b"x")
            async with http.post(f"{node.url}/admin/snapshot") as response:
                assert response.status in (200, 202), await response.text()
            async with asyncio.timeout(DEADLINE_S):
                async for msg in ws:
                    seen.append(json.loads(msg.data))
                    types = {e["type"] for e in seen}
                    if {"storage.sample", "replication.sample",
                            "storage.snapshot_taken"} <= types:
                        break
        samples = [e for e in seen if e["type"] == "storage.sample"]
        assert samples[-1]["last_lsn"] >= 1 and "fsync_ms_mean" in samples[-1]["wal"]
        replication = [e for e in seen if e["type"] == "replication.sample"]
        assert replication[-1]["role"] == "primary"


@pytest.mark.parametrize("query", ["interval_ms=10", "interval_ms=abc",
                                   "categories=storage,bogus", "categories="])
async def test_bad_queries_are_refused_before_the_websocket_opens(node, query) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/v1/events?{query}") as response:
            assert response.status == 400
            body = await response.json()
    assert body["error"] == "INVALID_ARGUMENT"


def test_cli_events_json_lines_and_a_bad_interval(node) -> None:
    base = [sys.executable, "-m", "shardkv.cluster.cli", "events", "--node", node.url]
    done = subprocess.run([*base, "--interval-ms", "100", "--json", "--count", "4"],
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) == 4
    assert {e["type"] for e in events} <= {"storage.sample", "replication.sample",
                                          "storage.snapshot_taken", "storage.segments_changed",
                                          "role.changed"}
    bad = subprocess.run([*base, "--interval-ms", "5"], capture_output=True, text=True,
                         timeout=DEADLINE_S)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr

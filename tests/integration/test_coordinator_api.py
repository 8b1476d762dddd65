"""The coordinator's HTTP API against a real single-member group (in this process: a real
Raft thread, a real journal, real sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from eventually import eventually
from shardkv.cluster.local_processes import free_port
from shardkv.coordinator.config import CoordinatorConfig, RaftTimings
from shardkv.coordinator.server import Coordinator

pytestmark = pytest.mark.integration
TOKEN = "s3cret-admin-token"


async def leader_probe(coord: Coordinator) -> None:
    """A stand-in for the failure detector: runs only while this member leads."""
    assert coord.is_leader()
    await asyncio.Event().wait()


@pytest.fixture
async def coordinator(tmp_path: Path) -> AsyncIterator[Coordinator]:
    config = CoordinatorConfig(
        id="c1", listen="127.0.0.1:0", raft=f"127.0.0.1:{free_port()}",
        data_dir=str(tmp_path / "c1"), init_shards=2, replication_factor=2,
        admin_token=TOKEN, raft_password="api-test",
        timings=RaftTimings(election_min=0.1, election_max=0.2, append_entries_period=0.02,
                            leader_fallback=1.0),
    )
    coord = Coordinator(config)
    coord.leader_task_factories.append(leader_probe)
    await coord.start()
    try:
        deadline = time.monotonic() + 10
        while not (coord.is_ready() and coord.watch.current.shards and
                   "c1" in coord.watch.current.coordinators):
            assert time.monotonic() < deadline, "coordinator never became ready"
            await asyncio.sleep(0.02)
        yield coord
    finally:
        await coord.stop()


@pytest.fixture
async def http(coordinator: Coordinator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=coordinator.config.url) as session:
        yield session


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def send(http: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, raw: bytes | None = None
               ) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if raw is not None:
        kwargs["data"] = raw
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, path, **kwargs) as resp:
        text = await resp.read()
        return resp.status, (await resp.json() if text else None)


async def test_admin_requires_the_bearer_token(http: aiohttp.ClientSession) -> None:
    status, body = await send(http, "GET", "/admin/nodes")
    assert status == 401 and body["error"] == "UNAUTHORIZED"
    status, _ = await send(http, "GET", "/admin/nodes", headers={"Authorization": "Bearer no"})
    assert status == 401
    status, body = await send(http, "GET", "/admin/shards", headers=AUTH)
    assert status == 200 and sorted(body["shards"]) == ["s1", "s2"]
    status, _ = await send(http, "GET", "/v1/map")  # the map is not an admin route
    assert status == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "status", "code"),
    [
        ("POST", "/admin/shards", None, b"{not json", 400, "INVALID_ARGUMENT"),
        ("POST", "/admin/shards", None, b"[1, 2]", 400, "INVALID_ARGUMENT"),
        ("POST", "/admin/shards", {"weigth": 2}, None, 400, "INVALID_ARGUMENT"),
        ("POST", "/admin/shards", {"weight": "heavy"}, None, 400, "INVALID_ARGUMENT"),
        ("POST", "/admin/shards", {"shard": "s1"}, None, 412, "VERSION_MISMATCH"),
        ("POST", "/admin/shards", {"count": 5}, None, 412, "VERSION_MISMATCH"),
        ("POST", "/admin/nodes/n404/drain", None, None, 404, "NOT_FOUND"),
        ("DELETE", "/admin/nodes/n404", None, None, 404, "NOT_FOUND"),
        ("PUT", "/admin/ring", {"shards": {"s1": 1, "s9": 1}}, None, 404, "NOT_FOUND"),
        ("POST", "/admin/shards/s1/primary", {"node": "n404"}, None, 400, "INVALID_ARGUMENT"),
        ("POST", "/v1/nodes/register", {"url": "ftp://x"}, None, 400, "INVALID_ARGUMENT"),
        ("POST", "/v1/nodes/register", {"url": "http://x:1", "role": "god"}, None, 400,
         "INVALID_ARGUMENT"),
        ("POST", "/v1/nodes/n404/heartbeat", {"lsn": 1}, None, 404, "NOT_FOUND"),
        ("POST", "/v1/nodes/n404/heartbeat", {"lsn": -1}, None, 400, "INVALID_ARGUMENT"),
    ],
)
async def test_malformed_requests_get_clear_errors_and_change_nothing(
    coordinator: Coordinator, http: aiohttp.ClientSession, method: str, path: str,
    body: Any, raw: bytes | None, status: int, code: str,
) -> None:
    before = coordinator.watch.current.to_dict()
    got_status, answer = await send(http, method, path, body, headers=AUTH, raw=raw)
    assert (got_status, answer["error"]) == (status, code), answer
    assert answer["message"] and answer["retryable"] is False
    assert coordinator.watch.current.to_dict() == before


async def test_register_heartbeat_and_admin_views(coordinator: Coordinator,
                                                  http: aiohttp.ClientSession) -> None:
    status, placed = await send(http, "POST", "/v1/nodes/register",
                                {"url": "http://127.0.0.1:9001", "labels": {"zone": "a"}})
    assert status == 200 and (placed["node_id"], placed["shard"], placed["role"]) == (
        "n1", "s1", "primary")
    assert placed["map"]["nodes"]["n1"]["role"] == "primary"
    status, beat = await send(http, "POST", "/v1/nodes/n1/heartbeat",
                              {"lsn": 42, "epoch": 1, "role": "primary"})
    assert status == 200 and beat["map_version"] == placed["map_version"]
    status, nodes = await send(http, "GET", "/admin/nodes", headers=AUTH)
    n1 = nodes["nodes"]["n1"]
    assert n1["liveness"] == "alive" and n1["reported_lsn"] == 42 and n1["role"] == "primary"
    status, drained = await send(http, "POST", "/admin/nodes/n1/drain", headers=AUTH)
    assert status == 200 and drained["left_shard"] == "s1"
    status, removed = await send(http, "DELETE", "/admin/nodes/n1", headers=AUTH)
    assert status == 200 and removed["node"] == "n1"
    assert "n1" not in coordinator.watch.current.nodes


async def test_map_in_msgpack_and_parked_watchers_see_a_change(
    coordinator: Coordinator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with http.get("/v1/map", headers={"Accept": "application/msgpack"}) as resp:
        assert resp.content_type == "application/msgpack"
        current = msgpack.unpackb(await resp.read())
    version = current["version"]
    async with http.get(f"/v1/map?since={version}&timeout=0.2") as resp:
        assert resp.status == 304  # nothing newer within the timeout

    async def watch() -> tuple[int, int]:
        async with http.get(f"/v1/map?since={version}&timeout=60") as resp:
            return resp.status, (await resp.json())["version"]

    # Count the long polls as they park in the coordinator (it runs in this process), so
    # the change below is made while all 50 wait, instead of after a guessed sleep.
    parked: list[int] = []
    wait_newer = coordinator.watch.wait_newer

    async def counted(since: int, wait_s: float) -> Any:
        parked.append(since)
        return await wait_newer(since, wait_s)

    monkeypatch.setattr(coordinator.watch, "wait_newer", counted)
    watchers = [asyncio.create_task(watch()) for _ in range(50)]
    await eventually(lambda: len(parked) == 50, what="50 parked long polls")
    status, _ = await send(http, "POST", "/admin/shards", {}, headers=AUTH)
    assert status == 202  # an online migration starts (it waits for the new shard's members)
    # A watcher not woken by the change would answer only at its 60 s timeout: the deadline
    # here is far below it. How fast the fan-out is: bench/coordinator_bench.py (fanout).
    seen = await asyncio.wait_for(asyncio.gather(*watchers), 30)
    assert all(code == 200 and v > version for code, v in seen)


async def test_health_ready_and_metrics(coordinator: Coordinator,
                                        http: aiohttp.ClientSession) -> None:
    status, health = await send(http, "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, ready = await send(http, "GET", "/ready")
    assert status == 200 and ready["ready"] and ready["is_leader"] and ready["leader"] == "c1"
    probes = [t for t in coordinator._leader_tasks if t.get_name() == "leader-0"]
    assert probes and not probes[0].done(), "the leader-only task is not running"
    async with http.get("/metrics") as resp:
        text = await resp.text()
    for name in ("shardkv_raft_term", "shardkv_raft_commit_index", "shardkv_raft_is_leader 1.0",
                 "shardkv_map_version", 'shardkv_nodes_liveness{state="alive"}'):
        assert name in text, name


# --- the node <-> coordinator protocol version (cluster/control_protocol.py) ---------------

async def test_nodes_of_versions_n_and_n_minus_1_are_served_and_told_ours(
        coordinator: Coordinator, http: aiohttp.ClientSession) -> None:
    from shardkv.cluster.control_protocol import CONTROL_PROTOCOL_VERSION as N
    from shardkv.cluster.control_protocol import PROTOCOL_HEADER

    # No header: a node of the releases before it (version 1 = N-1).
    async with http.post("/v1/nodes/register", json={"url": "http://127.0.0.1:9001"}) as resp:
        assert resp.status == 200 and resp.headers[PROTOCOL_HEADER] == str(N)
        node_id = (await resp.json())["node_id"]
    for version in (N - 1, N, N + 1):  # a node one release newer than this coordinator too
        async with http.post(f"/v1/nodes/{node_id}/heartbeat", json={"lsn": version},
                             headers={PROTOCOL_HEADER: str(version)}) as resp:
            assert resp.status == 200 and resp.headers[PROTOCOL_HEADER] == str(N)
    report = coordinator.liveness.report(node_id)
    assert report is not None and report.lsn == N + 1


async def test_nodes_further_apart_are_refused_naming_both_versions(
        coordinator: Coordinator, http: aiohttp.ClientSession) -> None:
    from shardkv.cluster.control_protocol import CONTROL_PROTOCOL_VERSION as N
    from shardkv.cluster.control_protocol import PROTOCOL_HEADER

    status, placed = await send(http, "POST", "/v1/nodes/register",
                                {"url": "http://127.0.0.1:9002"})
    assert status == 200
    node_id = placed["node_id"]
    before = coordinator.watch.current.to_dict()
    far = {PROTOCOL_HEADER: str(N + 2)}
    for path, body in (("/v1/nodes/register", {"url": "http://127.0.0.1:9003"}),
                       (f"/v1/nodes/{node_id}/heartbeat", {"lsn": 99}),
                       (f"/v1/nodes/{node_id}/handoff", {})):
        status, answer = await send(http, "POST", path, body, headers=far)
        assert (status, answer["error"], answer["retryable"]) == (
            400, "UNSUPPORTED_PROTOCOL", False), (path, answer)
        assert (answer["protocol_version"], answer["peer_protocol_version"]) == (N, N + 2)
        assert f"version {N + 2}" in answer["message"] and f"version {N}" in answer["message"]
    # Nothing was placed, and the refused heartbeat kept no one alive.
    assert coordinator.watch.current.to_dict() == before
    report = coordinator.liveness.report(node_id)
    assert report is None or report.lsn != 99
    status, answer = await send(http, "POST", "/v1/nodes/register",
                                {"url": "http://127.0.0.1:9003"},
                                headers={PROTOCOL_HEADER: "zero"})
    assert (status, answer["error"]) == (400, "INVALID_ARGUMENT")
    # Only the node's own calls are held to its protocol: the map is served whatever the
    # header says, and an unknown path under /v1/nodes/ is a plain 404.
    status, _ = await send(http, "GET", "/v1/map", headers=far)
    assert status == 200
    async with http.get(f"/v1/nodes/{node_id}/nothing", headers=far) as resp:
        assert resp.status == 404

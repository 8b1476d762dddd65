"""The node's side of the node <-> coordinator protocol version (cluster/control_protocol.py):
the link names its version on every call, accepts a coordinator that names none (version 1,
the release before) and refuses, at registration, one more than a version apart.

The coordinator here is a stand-in (an aiohttp app on 127.0.0.1 answering registration the
way a coordinator does) because no release two versions ahead exists to run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.control_protocol import CONTROL_PROTOCOL_VERSION as N
from shardkv.cluster.control_protocol import PROTOCOL_HEADER
from shardkv.cluster.errors import UnsupportedProtocol
from shardkv.node.membership.coordinator_link import CoordinatorLink

pytestmark = pytest.mark.integration
Serve = Callable[[web.Application], Awaitable[str]]


def standin(answer_headers: dict[str, str], seen: list[str | None]) -> web.Application:
    async def register(request: web.Request) -> web.Response:
        seen.append(request.headers.get(PROTOCOL_HEADER))
        body = {"node_id": "n1", "shard": None, "role": "none", "epoch": 0,
                "map": ClusterMap().to_dict(), "heartbeat_interval_s": 30.0}
        return web.Response(body=wire.pack(body), content_type=wire.MSGPACK,
                            headers=answer_headers)

    app = web.Application()
    app.router.add_post(routes.NODE_REGISTER, register)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def link_to(url: str, data_dir: Path) -> CoordinatorLink:
    return CoordinatorLink([url], str(data_dir), "http://127.0.0.1:9", status=dict,
                           heartbeat_interval_s=30.0, watch_timeout_s=30.0)


@pytest.mark.parametrize("coordinator_version", [None, str(N - 1), str(N), str(N + 1)])
async def test_a_coordinator_within_one_version_is_accepted(
        serve: Serve, tmp_path: Path,
        coordinator_version: str | None) -> None:
    seen: list[str | None] = []
    headers = {} if coordinator_version is None else {PROTOCOL_HEADER: coordinator_version}
    url = await serve(standin(headers, seen))
    link = link_to(url, tmp_path)
    try:
        placement = await link.start(register_deadline_s=10)
    finally:
        await link.stop()
    assert placement.node_id == "n1"
    assert seen == [str(N)]  # the node named its own version


async def test_a_coordinator_two_versions_ahead_is_refused_at_registration(
        serve: Serve, tmp_path: Path) -> None:
    seen: list[str | None] = []
    url = await serve(standin({PROTOCOL_HEADER: str(N + 2)}, seen))
    link = link_to(url, tmp_path)
    with pytest.raises(UnsupportedProtocol) as refused:
        await link.start(register_deadline_s=10)
    assert refused.value.details["peer_protocol_version"] == N + 2
    assert f"the coordinator at {url} speaks node-coordinator protocol version {N + 2}," \
        in refused.value.message
    assert seen == [str(N)]  # refused at once, not retried

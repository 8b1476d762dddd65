"""The node's front door (node/api/front_door.py): the fast lane takes exactly the requests
the router would give to the key handlers, with the same key, and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from shardkv.node.api.front_door import FrontDoor, lane_key
from shardkv.node.api.rest import RestApi
from shardkv.node.config import NodeConfig
from shardkv.node.server import NodeServer

PATHS = [
    "/v1/kv/a", "/v1/kv/bench%3A00000001", "/v1/kv/dir%2Ffile%20%C3%A9", "/v1/kv/a%25b",
    "/v1/kv/a%252F", "/v1/kv/%2F", "/v1/kv//", "/v1/kv/a/b/../c", "/v1/kv/a?b=c",
    "/v1/kv/", "/v1/kv", "/v1/kv%2Fx", "/v1/kvx", "/v1/kv/x%0Ay", "/v1/kv/%0A", "/v1/kv/%00",
    "/v1/kv/%FF", "/health", "/v1/batch", "/admin/x", "/v1/kv/" + "k" * 2000,
]
KEY_HANDLERS = {"GET": RestApi.get_key, "PUT": RestApi.put_key}


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_the_lane_and_the_router_agree(tmp_path: Path, method: str) -> None:
    node = NodeServer(NodeConfig(data_dir=tmp_path))  # type: ignore[arg-type]
    node.app.freeze()
    taken = 0
    for path in PATHS:
        request = make_mocked_request(method, path, app=node.app)
        match = await node.app.router.resolve(request)
        routed_to_key = getattr(match.handler, "__func__", None) is KEY_HANDLERS[method]
        key = lane_key(request.rel_url.path_safe)
        assert (key is not None) == routed_to_key, path
        if key is not None:
            assert key == match["key"], path
            taken += 1
    assert taken >= 10


class _Rest:
    """Stands in for RestApi: records which lane handler ran with which key."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def get_named(self, request: web.Request, key: str) -> web.StreamResponse:
        self.calls.append(("get", key))
        return web.Response(body=b"v")

    async def put_named(self, request: web.Request, key: str) -> web.StreamResponse:
        self.calls.append(("put", key))
        raise RuntimeError("a bug in a handler")


class _Gate:
    def __init__(self) -> None:
        self.delivered_on: list[Any] = []

    def delivered(self, transport: Any) -> None:
        self.delivered_on.append(transport)


async def test_the_lane_tells_the_gate_and_falls_back_for_the_rest() -> None:
    rest, gate, routed_paths = _Rest(), _Gate(), []

    async def routed(request: web.Request) -> web.StreamResponse:
        routed_paths.append((request.method, request.path))
        return web.Response(status=204)

    handle = FrontDoor(gate, guard=None, rest=rest).handler(routed)  # type: ignore[arg-type]
    answer = await handle(make_mocked_request("GET", "/v1/kv/a%2Fb"))
    assert answer.status == 200 and rest.calls == [("get", "a/b")]
    assert len(gate.delivered_on) == 1
    # An exception no handler coded: INTERNAL, as the middleware answers it.
    answer = await handle(make_mocked_request("PUT", "/v1/kv/k"))
    assert answer.status == 500 and b'"INTERNAL"' in answer.body
    for method, path, headers in [("DELETE", "/v1/kv/k", {}), ("HEAD", "/v1/kv/k", {}),
                                  ("GET", "/v1/kv/", {}), ("GET", "/health", {}),
                                  ("PUT", "/v1/kv/k", {"Expect": "100-continue"})]:
        answer = await handle(make_mocked_request(method, path, headers=headers))
        assert answer.status == 204, (method, path)
    assert len(routed_paths) == 5 and len(rest.calls) == 2 and len(gate.delivered_on) == 2


async def test_aiohttp_still_has_the_hook_the_lane_is_installed_by() -> None:
    """node/server.py sets ``web.Server.request_handler`` (read by each connection's
    handler): if aiohttp renamed it, the lane would silently be off."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler)
    assert server.request_handler is handler
    server.request_handler = FrontDoor(_Gate(), None, _Rest()).handler(handler)  # type: ignore[arg-type]
    connection = server()
    assert connection._request_handler is server.request_handler  # what each request runs

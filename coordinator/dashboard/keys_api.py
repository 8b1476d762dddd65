"""The dashboard's key browser: scan a prefix, get a key (``/ui/api/...``).

Both need the dashboard credential when the cluster is secured (dashboard_auth.py): the key
space is data, and the page that shows it is public. Keys and values are UTF-8 text in the
answers, or ``{"b64": ...}`` when not; a value over ``VALUE_PREVIEW_BYTES`` is cut (with
``value_bytes``, its full size), since this is a browser, not a bulk reader.

- ``GET /ui/api/scan?prefix=P&limit=N``: the first N keys (1..``MAX_LIMIT``, default 50) with
  the prefix, across every shard of the ring: each shard's primary is asked for N, the pages
  are merged in key order and cut at N (``more`` says whether any shard had more).
- ``GET /ui/api/key?key=K``: the value at the primary of the shard that owns K.

A retryable answer (a failover under way, a map moving) is retried against the current map
for up to ``RETRY_S``, as the client library would; then the error is the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import InvalidArgument, ShardKVError, Unavailable
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.wire import JSON, to_json
from shardkv.coordinator import dashboard_auth
from shardkv.coordinator.dashboard.node_rpc import call
from shardkv.coordinator.http_io import coordinator_of

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
VALUE_PREVIEW_BYTES = 4096
MAX_KEY_BYTES = 1024
RETRY_S = 5.0

T = TypeVar("T")


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    deadline = time.monotonic() + RETRY_S
    pause = 0.05
    while True:
        try:
            return await attempt()
        except ShardKVError as exc:
            if not exc.retryable or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


def _text_param(request: web.Request, name: str, *, required: bool) -> bytes:
    raw = request.query.get(name)
    if raw is None:
        if required:
            raise InvalidArgument(f"?{name}= is required")
        return b""
    data = raw.encode()
    if len(data) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{name} is over {MAX_KEY_BYTES} bytes")
    if required and not data:
        raise InvalidArgument(f"{name} must not be empty")
    return data


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _item(key: bytes, value: bytes, version: int, shard: str) -> dict[str, Any]:
    return {"key": key, "value": value[:VALUE_PREVIEW_BYTES], "value_bytes": len(value),
            "version": version, "shard": shard}


def _primary_url(cluster_map: ClusterMap, shard_id: str) -> str:
    node = cluster_map.primary_of(shard_id)
    if node is None:
        raise Unavailable(f"shard {shard_id} has no primary right now")
    return node.url


def _answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=to_json(body), status=status, content_type=JSON,
                        headers={"Cache-Control": "no-store"})


async def scan(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    dashboard_auth.require(coord, request)
    prefix = _text_param(request, "prefix", required=False)
    limit = _limit(request)
    async def attempt() -> tuple[list[str], list[Any]]:
        cluster_map = coord.watch.current
        shards = sorted(cluster_map.ring.shards)
        args = {"prefix": prefix, "limit": limit, "ring_version": cluster_map.ring.version}
        async with aiohttp.ClientSession() as session:
            return shards, await asyncio.gather(*(
                call(session, _primary_url(cluster_map, s), "scan", args) for s in shards))

    shards, pages = await _retrying(attempt)
    items: list[dict[str, Any]] = []
    more = False
    for shard_id, page in zip(shards, pages, strict=True):
        more = more or page.get("cursor") is not None
        items += [_item(bytes(k), bytes(v), int(ver), shard_id) for k, v, ver in page["items"]]
    items.sort(key=lambda item: item["key"])
    more = more or len(items) > limit
    return _answer({"items": items[:limit], "more": more, "prefix": prefix})


async def get_key(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    dashboard_auth.require(coord, request)
    key = _text_param(request, "key", required=True)
    async def attempt() -> tuple[str, Any]:
        cluster_map = coord.watch.current
        shard_id = shard_for_key(cluster_map, key)
        async with aiohttp.ClientSession() as session:
            return shard_id, await call(session, _primary_url(cluster_map, shard_id), "get",
                                        {"key": key, "ring_version": cluster_map.ring.version})

    shard_id, result = await _retrying(attempt)
    body = _item(key, bytes(result["value"]), int(result["version"]), shard_id)
    body["expires_at"] = result.get("expires_at")
    return _answer(body)


def routes() -> list[web.RouteDef]:
    return [web.get("/ui/api/scan", scan), web.get("/ui/api/key", get_key)]

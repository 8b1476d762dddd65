"""Replication's HTTP surface on a node: the stream, its status, the digest, fencing.

- ``GET /v1/replicate``: the WebSocket stream (``replication_primary.py``), primary only;
- ``GET /v1/replication``: role, epoch, log end, lease, per-replica lag or the follower's
  staleness (the coordinator probes it before a failover);
- ``GET /v1/digest``: SHA-256 over every (key, value, version) in key order at one applied
  LSN, so a test or an operator can check that the members of a shard converged;
- ``POST /admin/replication/fence`` and ``/unfence``: a planned switchover, node side;
- who may call these: ``node/membership/internal_guard.py`` (signed requests) and
  ``stream_auth.py`` (the stream's challenge-response);
- test-only (``SHARDKV_TEST_ADMIN=1``): the failpoint routes, the clock routes
  (``node/testing/clock_admin.py``) and ``POST /admin/replication/compact`` (snapshot now, dropping
  the log behind it).

Coded errors are answered as their error body here: the server's last-line middleware would
call them INTERNAL.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.errors import (
    InvalidArgument,
    NotPrimary,
    ShardKVError,
    Unauthorized,
    Unavailable,
)
from shardkv.node.replication import stream_auth
from shardkv.node.testing import clock_admin, failpoints

if TYPE_CHECKING:
    from shardkv.node.replication.shard_role import NodeReplication
    from shardkv.node.storage.store import Store

DIGEST_PAGE = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReplicationEndpoints:
    def __init__(self, replication: NodeReplication) -> None:
        self.replication = replication

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.get("/v1/replicate", self.replicate),
            web.get("/v1/replication", _coded(self.status)),
            web.get("/v1/digest", _coded(self.digest)),
            web.post("/admin/replication/fence", _coded(self.fence)),
            web.post("/admin/replication/unfence", _coded(self.unfence)),
            *failpoints.admin_routes(),
            *clock_admin.admin_routes(),
        ]
        if failpoints.test_admin_enabled():
            routes.append(web.post("/admin/replication/compact", _coded(self.compact)))
        return routes

    async def replicate(self, request: web.Request) -> web.StreamResponse:
        primary = self.replication.primary
        if primary is None:  # a fenced primary still streams: its target is catching up
            error = NotPrimary("this node is not the primary",
                               primary=self.replication.server.ctx.primary)
            return _respond(request, error.to_dict(), error.http_status)
        guard = self.replication.server.guard
        gate = self.replication.server.gate
        if guard.open:  # a loopback development cluster: nothing to authenticate
            gate.exempt(request.transport)
            return await primary.serve(request)
        if guard.verifier is None:
            error = Unauthorized("replication is closed: this node has no cluster credential")
            return _respond(request, error.to_dict(), error.http_status)
        secret = guard.verifier.secret
        primary_id = self.replication.server.ctx.node_id or "node"

        async def authenticate(ws: web.WebSocketResponse, req: web.Request) -> str:
            try:
                replica_id = await stream_auth.authenticate_replica(ws, req, primary_id, secret)
            except ShardKVError:
                guard.refused += 1
                raise
            gate.exempt(req.transport)  # a member's stream: its acks are not a stranger's
            return replica_id

        return await primary.serve(request, authenticate)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return _respond(request, self.replication.status())

    async def digest(self, request: web.Request) -> web.StreamResponse:
        """At an applied LSN that did not move while the digest was computed (retried until
        it holds still)."""
        for _ in range(50):
            store = self._store()
            before = store.applied_lsn
            digest, keys = await digest_of(store)
            if store.applied_lsn == before:
                return _respond(request, {"digest": digest, "keys": keys, "applied_lsn": before,
                                          "last_lsn": store.wal.last_lsn})
            await asyncio.sleep(0.02)
        raise Unavailable("the state kept changing; try the digest again when writes pause")

    async def fence(self, request: web.Request) -> web.StreamResponse:
        body = await _read_body(request)
        epoch = body.get("epoch")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise InvalidArgument("epoch must be an integer")
        return _respond(request, self.replication.fence(epoch))

    async def unfence(self, request: web.Request) -> web.StreamResponse:
        await _read_body(request)
        return _respond(request, self.replication.unfence())

    async def compact(self, request: web.Request) -> web.StreamResponse:
        store = self._store()
        meta = await store.snapshot_now()
        return _respond(request, {"snapshot_lsn": meta.lsn, "first_lsn": store.wal.first_lsn})

    def _store(self) -> Store:
        store = self.replication.server.store
        if store is None:
            raise Unavailable("the node is not serving (starting up or shutting down)")
        return store


async def digest_of(store: Store) -> tuple[str, int]:
    """SHA-256 over (key, value, version) of every live key in key order, and the count."""
    h = hashlib.sha256()
    keys = 0
    cursor: bytes | None = None
    while True:
        page = await store.scan(cursor=cursor, limit=DIGEST_PAGE)
        for key, item in page.items:
            h.update(len(key).to_bytes(4, "big") + key)
            h.update(len(item.value).to_bytes(4, "big") + item.value)
            h.update(item.version.to_bytes(8, "big"))
            keys += 1
        if page.cursor is None:
            return h.hexdigest(), keys
        cursor = page.cursor


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = wire.unpack(raw) if request.content_type == wire.MSGPACK else wire.from_json(raw)
    except ValueError as exc:
        raise InvalidArgument(f"unreadable body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a map")
    return body


def _respond(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    if wire.MSGPACK in request.headers.get("Accept", ""):
        return web.Response(body=wire.pack(body), status=status, content_type=wire.MSGPACK)
    return web.Response(body=wire.to_json(body), status=status, content_type=wire.JSON)


def _coded(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ShardKVError as exc:
            return _respond(request, exc.to_dict(), exc.http_status)

    return wrapped

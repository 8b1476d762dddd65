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
from typing import TYPE_CHECKING

from aiohttp import web
from shardkv.cluster import internal_routes as routes
from shardkv.cluster.errors import (
    InvalidArgument,
    NotPrimary,
    ShardKVError,
    Unauthorized,
    Unavailable,
)
from shardkv.cluster.http_body import error_response, read_object, respond
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
        table = [
            web.get(routes.REPLICATE, self.replicate),
            web.get(routes.REPLICATION_STATUS, _coded(self.status)),
            web.get(routes.DIGEST, _coded(self.digest)),
            web.post(routes.FENCE, _coded(self.fence)),
            web.post(routes.UNFENCE, _coded(self.unfence)),
            *failpoints.admin_routes(),
            *clock_admin.admin_routes(),
        ]
        if failpoints.test_admin_enabled():
            table.append(web.post(routes.COMPACT, _coded(self.compact)))
        return table

    async def replicate(self, request: web.Request) -> web.StreamResponse:
        primary = self.replication.primary
        if primary is None:  # a fenced primary still streams: its target is catching up
            error = NotPrimary("this node is not the primary",
                               primary=self.replication.server.ctx.primary)
            return error_response(request, error)
        guard = self.replication.server.guard
        gate = self.replication.server.gate
        if guard.open:  # a loopback development cluster: nothing to authenticate
            gate.exempt(request.transport)
            return await primary.serve(request)
        if guard.verifier is None:
            closed = Unauthorized("replication is closed: this node has no cluster credential")
            return error_response(request, closed)
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
        return respond(request, dict(self.replication.status()))

    async def digest(self, request: web.Request) -> web.StreamResponse:
        """At an applied LSN that did not move while the digest was computed (retried until
        it holds still)."""
        for _ in range(50):
            store = self._store()
            before = store.applied_lsn
            digest, keys = await digest_of(store)
            if store.applied_lsn == before:
                return respond(request, {"digest": digest, "keys": keys, "applied_lsn": before,
                                          "last_lsn": store.wal.last_lsn})
            await asyncio.sleep(0.02)
        raise Unavailable("the state kept changing; try the digest again when writes pause")

    async def fence(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request, allow_empty=True)
        epoch = body.get("epoch")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise InvalidArgument("epoch must be an integer")
        return respond(request, dict(self.replication.fence(epoch)))

    async def unfence(self, request: web.Request) -> web.StreamResponse:
        await read_object(request, allow_empty=True)
        return respond(request, dict(self.replication.unfence()))

    async def compact(self, request: web.Request) -> web.StreamResponse:
        store = self._store()
        meta = await store.snapshot_now()
        return respond(request, {"snapshot_lsn": meta.lsn, "first_lsn": store.wal.first_lsn})

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


def _coded(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ShardKVError as exc:
            return error_response(request, exc)

    return wrapped

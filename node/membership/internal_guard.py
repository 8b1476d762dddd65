"""Who may call a node's cluster-internal routes.

``/admin/...`` (fencing, the test-only failpoint, clock and compaction routes) and
``/v1/digest`` need a cluster signature (``cluster/peer_auth.py``) from a coordinator or an
operator (a node may also ask for a digest). The replication stream authenticates inside
the stream, both ways (``node/replication/stream_auth.py``). The data API (``/v1/kv``,
``/v1/batch``, ``/v1/rpc``, ``/v1/watch``) and the probes (``/health``, ``/ready``, ``/metrics``,
``/v1/status``, ``/v1/replication``, ``/v1/events``) are not cluster-internal.

Without a cluster credential, a node on a loopback address runs these routes open (a
development cluster on one machine); on any other address they are closed (a standalone
node has nobody to trust) and a clustered node refuses to start (``node/cli.py``).
"""

from __future__ import annotations

import os

from aiohttp import web
from shardkv.cluster.cluster_token import (
    ADMIN_TOKEN_ENV,
    check_bearer,
    cluster_token,
    is_loopback,
)
from shardkv.cluster.errors import ShardKVError, Unauthorized
from shardkv.cluster.peer_auth import COORDINATOR, OPERATOR, PeerVerifier, require_principal

PRINCIPAL_KEY = web.RequestKey("principal", str)


def is_internal(path: str) -> bool:
    return path.startswith("/admin/") or path == "/v1/digest"


class InternalGuard:
    """Admits or refuses requests to internal routes (``admit``, called by the node's one
    middleware, ``node/api/front_door.py``) and holds the verifier the stream uses."""

    def __init__(self, listen_host: str, secret: str | None = None) -> None:
        secret = secret if secret is not None else cluster_token()
        self.verifier = PeerVerifier(secret) if secret else None
        self.open = self.verifier is None and is_loopback(listen_host)
        self.refused = 0

    async def admit(self, request: web.Request) -> web.StreamResponse | None:
        """``None`` if ``request`` (to an internal route: ``is_internal``) may go on, with its
        principal recorded; else the refusal to answer. The caller asks ``is_internal``
        first: every request passes there and almost none are internal."""
        admin_token = os.environ.get(ADMIN_TOKEN_ENV)
        header = request.headers.get("Authorization")
        if admin_token and request.path.startswith("/admin/") and check_bearer(header,
                                                                               admin_token):
            request[PRINCIPAL_KEY] = OPERATOR  # the operator's token, as on the coordinator
            return None
        if self.open and not admin_token:
            return None
        try:
            if self.verifier is None:
                raise Unauthorized("cluster-internal routes are closed: this node has no "
                                   "cluster credential and does not listen on loopback"
                                   if not self.open else
                                   "admin routes need 'Authorization: Bearer <admin token>'")
            principal = self.verifier.verify(request.method, request.raw_path,
                                             await request.read(),
                                             header)
            allowed: tuple[str, ...] = (OPERATOR, COORDINATOR)
            if request.path == "/v1/digest":
                allowed = (OPERATOR, COORDINATOR, "node:*")
            require_principal(principal, *allowed)
        except ShardKVError as exc:
            self.refused += 1
            return web.json_response(exc.to_dict(), status=exc.http_status)
        request[PRINCIPAL_KEY] = principal
        return None

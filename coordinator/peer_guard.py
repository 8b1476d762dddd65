"""Who may call what on a coordinator.

- ``POST /v1/nodes/register``: a node (signed as ``node`` before it has an id, as
  ``node:<id>`` after) or an operator; a node signed as ``node:<x>`` may only register ``x``.
  The state machine then checks the node's registration token (``state_machine.py``), so
  an existing id cannot be re-pointed by anyone but the node that first claimed it.
- ``POST /v1/nodes/{id}/heartbeat`` and ``POST /v1/nodes/{id}/handoff`` (a stopping primary
  asks for a switchover, ``handoff_api.py``): only ``node:<id>``.
- ``/admin/...``: the admin token (``SHARDKV_ADMIN_TOKEN``) when set, or the cluster
  credential as ``operator`` or ``coordinator``.
- Everything else (the map, health, metrics, the dashboard) is readable by anyone.

With no cluster credential configured (a loopback-only development cluster) only the admin
token, if set, is checked. The authenticated principal is left in ``request["principal"]``.
"""

from __future__ import annotations

from aiohttp import web
from shardkv.cluster.cluster_token import check_bearer
from shardkv.cluster.errors import Forbidden, Unauthorized
from shardkv.cluster.peer_auth import (
    COORDINATOR,
    OPERATOR,
    UNREGISTERED_NODE,
    node_principal,
    require_principal,
)
from shardkv.coordinator.http_io import Handler, coordinator_of

PRINCIPAL_KEY = web.RequestKey("principal", str)


def _guarded(path: str) -> bool:
    return path.startswith("/admin/") or (
        path.startswith("/v1/nodes/") and (path == "/v1/nodes/register"
                                           or path.endswith(("/heartbeat", "/handoff"))))


@web.middleware
async def peer_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not _guarded(path):
        return await handler(request)
    coord = coordinator_of(request)
    verifier = coord.peer_verifier
    admin_token = coord.config.admin_token
    header = request.headers.get("Authorization")
    if path.startswith("/admin/"):
        if admin_token and check_bearer(header, admin_token):
            request[PRINCIPAL_KEY] = OPERATOR
            return await handler(request)
        if verifier is None:
            if admin_token:
                raise Unauthorized("admin endpoints need 'Authorization: Bearer <token>'")
            return await handler(request)
        principal = verifier.verify(request.method, request.raw_path, await request.read(),
                                    header)
        require_principal(principal, OPERATOR, COORDINATOR)
    elif verifier is None:
        return await handler(request)
    else:
        principal = verifier.verify(request.method, request.raw_path, await request.read(),
                                    header)
        if path == "/v1/nodes/register":
            require_principal(principal, OPERATOR, UNREGISTERED_NODE, "node:*")
        else:
            node_id = request.match_info.get("node_id", "")
            if principal != node_principal(node_id):
                raise Forbidden(f"only node {node_id} may make this call for itself, not "
                                f"{principal}")
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


def registering_as(request: web.Request, body_node_id: object) -> None:
    """A node signed as ``node:<x>`` registers ``x`` and nothing else."""
    principal = request.get(PRINCIPAL_KEY)
    if isinstance(principal, str) and principal.startswith("node:") and \
            principal != node_principal(str(body_node_id)):
        raise Forbidden(f"{principal} may not register node {body_node_id!r}")

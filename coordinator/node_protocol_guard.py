"""The coordinator's side of the node <-> coordinator protocol version
(``cluster/control_protocol.py``).

Every call a node makes about itself (``/v1/nodes/register``, ``/v1/nodes/{id}/heartbeat``,
``/v1/nodes/{id}/handoff``) names the node's protocol version in ``X-Shardkv-Protocol`` (none:
version 1, the releases before the header). A version within one of this coordinator's is
served, and the answer names the coordinator's version in the same header so the node can
check the other direction; anything else is refused with 400 ``UNSUPPORTED_PROTOCOL`` before
the handler runs, so a refused node changes nothing (it is neither placed nor kept alive).

It runs after ``peer_guard``: a caller without the credential learns nothing about versions.
"""

from __future__ import annotations

from aiohttp import web
from shardkv.cluster import internal_routes as routes
from shardkv.cluster.control_protocol import require_compatible, version_headers, version_in
from shardkv.coordinator.http_io import Handler

NODE_CALLS = frozenset({routes.NODE_REGISTER, routes.NODE_HEARTBEAT, routes.NODE_HANDOFF})


def _is_node_call(request: web.Request) -> bool:
    """One of the three calls a node makes about itself (by route, so that another route
    under ``/v1/nodes/``, a view for people, is not held to the node's protocol)."""
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in NODE_CALLS


@web.middleware
async def node_protocol_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_node_call(request):
        return await handler(request)
    node = request.match_info.get("node_id") or "the registering node"
    require_compatible(version_in(request.headers), peer=f"node {node}")
    response = await handler(request)
    response.headers.update(version_headers())
    return response

"""The map and the nodes' side of the coordinator API.

- ``GET /v1/map``: the map (JSON, or msgpack when Accept asks). ``?since=V`` long-polls until
  a map newer than V exists (``?timeout=S``, capped), answering 304 when none came: clients
  and nodes watch instead of polling. Any member serves it (a follower's map may trail the
  leader's by a heartbeat; versions tell readers which is newer).
- ``POST /v1/nodes/register``: a node announces itself and is placed (through Raft; any
  member accepts it, pysyncobj forwards the proposal to the leader).
- ``POST /v1/nodes/{id}/heartbeat``: LSN, epoch and role, kept in the leader's memory only.
  A follower answers 421 naming the leader's URL. The answer carries the map version, so a
  node learns it must refresh without polling the map.
"""

from __future__ import annotations

from aiohttp import web
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.control_messages import HEARTBEAT_FIELDS, REGISTER_FIELDS
from shardkv.cluster.errors import InvalidArgument, NotFound, NotPrimary, Unavailable
from shardkv.coordinator.http_io import (
    coordinator_of,
    only_fields,
    read_object,
    respond,
    wants_msgpack,
)
from shardkv.coordinator.peer_guard import registering_as


def _int_param(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"?{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise InvalidArgument(f"?{name} must not be negative")
    return value


async def get_map(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    if not coord.watch.loaded:
        raise Unavailable("the map is not loaded yet")
    since = _int_param(request, "since", None)
    cluster_map = coord.watch.current
    if since is not None:
        timeout = _int_param(request, "timeout", 30.0) or 0.0
        timeout = min(timeout, coord.config.watch_timeout_max)
        newer = await coord.watch.wait_newer(int(since), timeout)
        if newer is None:
            return web.Response(status=304, headers={"X-Map-Version": str(cluster_map.version)})
        cluster_map = newer
    fmt = "msgpack" if wants_msgpack(request) else "json"
    body = coord.watch.encoded(cluster_map, coord.leader_id(), fmt)
    return web.Response(
        body=body,
        content_type=wire.MSGPACK if fmt == "msgpack" else wire.JSON,
        headers={"X-Map-Version": str(cluster_map.version)},
    )


async def register_node(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, REGISTER_FIELDS)
    if "node_id" in body:
        registering_as(request, body["node_id"])
    command = {"op": "register_node", **body}
    result = await coord.propose(command)
    answer = dict(result)
    served = coord.watch.current.copy()
    served.leader = coord.leader_id()
    answer["map"] = served.to_dict()
    answer["heartbeat_interval_s"] = max(0.2, coord.config.suspect_s / 3)
    return respond(request, answer)


async def heartbeat(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    node_id = request.match_info["node_id"]
    body = await read_object(request, allow_empty=True)
    only_fields(body, HEARTBEAT_FIELDS)
    for name in ("lsn", "epoch", "map_version"):
        value = body.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    role = body.get("role", "")
    if not isinstance(role, str) or len(role) > 32:
        raise InvalidArgument("role must be a short string")
    if not coord.is_leader():
        raise NotPrimary(
            "this coordinator is not the leader; send heartbeats to the leader",
            leader=coord.leader_id(), leader_url=coord.leader_url(),
        )
    cluster_map = coord.watch.current
    node = cluster_map.nodes.get(node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r} in the map; register again", node_id=node_id)
    coord.liveness.record(node_id, body.get("lsn", 0), body.get("epoch", 0), role,
                          body.get("map_version", 0))
    return respond(request, {
        "map_version": cluster_map.version,
        "ring_version": cluster_map.ring.version,
        "leader": coord.config.id,
        "status": node.status,
        "shard": node.shard,
        "role": node.role,
        "epoch": cluster_map.shards[node.shard].epoch if node.shard in cluster_map.shards
        else 0,
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get(routes.MAP, get_map)
    app.router.add_post(routes.NODE_REGISTER, register_node)
    app.router.add_post(routes.NODE_HEARTBEAT, heartbeat)

"""The operator's API: inspect nodes and shards, bootstrap, add shards, move primaries,
change the ring, drain and remove nodes, change the coordinator group.

Every change is a Raft command; a request is validated here first (unknown fields, wrong
types) and again, deterministically, by the state machine, so a malformed request changes
nothing. Who may call these routes is decided in ``peer_guard.py`` (the admin token, or the
cluster credential).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from shardkv.cluster.errors import InvalidArgument, NotFound
from shardkv.coordinator.http_io import (
    coordinator_of,
    only_fields,
    read_object,
    respond,
)
from shardkv.coordinator.migration_api import begin_add
from shardkv.coordinator.ring_change_guard import refuse_ring_change_over_data


async def _from_leader(request: web.Request, leader_url: str) -> web.Response | None:
    """Liveness lives in the leader's memory: a follower asks the leader for the view."""
    headers = {k: v for k, v in request.headers.items()
               if k.lower() in ("authorization", "accept")}
    headers["X-Shardkv-Forwarded"] = "1"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            async with session.get(f"{leader_url}{request.path_qs}", headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return None
                return web.Response(body=body, status=200,
                                    content_type=resp.content_type or "application/json")
    except (aiohttp.ClientError, TimeoutError):
        return None


async def list_nodes(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    leader_url = coord.leader_url()
    if (not coord.is_leader() and leader_url and leader_url != coord.config.url
            and "X-Shardkv-Forwarded" not in request.headers):
        forwarded = await _from_leader(request, leader_url)
        if forwarded is not None:
            return forwarded
    cluster_map = coord.watch.current
    liveness_known = coord.is_leader()
    live = coord.liveness.snapshot(cluster_map.nodes) if liveness_known else {}
    nodes = {}
    for node_id, info in sorted(cluster_map.nodes.items()):
        entry: dict[str, Any] = info.to_dict()
        entry.update(live.get(node_id, {"liveness": None}))
        nodes[node_id] = entry
    return respond(request, {
        "map_version": cluster_map.version,
        "liveness_from": coord.config.id if liveness_known else None,
        "leader": coord.leader_id(),
        "leader_url": coord.leader_url(),
        "nodes": nodes,
    })


async def list_shards(request: web.Request) -> web.StreamResponse:
    cluster_map = coordinator_of(request).watch.current
    return respond(request, {
        "map_version": cluster_map.version,
        "replication_factor": cluster_map.replication_factor,
        "ring": cluster_map.ring.to_dict(),
        "shards": {sid: s.to_dict() for sid, s in sorted(cluster_map.shards.items())},
    })


async def add_shard(request: web.Request) -> web.StreamResponse:
    """``{"shard"?: id, "weight"?: n}`` starts an online migration that adds one shard to
    the ring (202); ``{"in_ring": false}`` adds a shard outside the ring (201, nothing
    moves); on a cluster with no shards, ``{"count": N, "replication_factor": R}``
    bootstraps N shards instead."""
    coord = coordinator_of(request)
    body = await read_object(request, allow_empty=True)
    if "count" in body:
        only_fields(body, {"count", "replication_factor", "hash", "vnodes"})
        command = {"op": "bootstrap", "shards": body["count"],
                   "replication_factor": body.get("replication_factor", 1)}
        for name in ("hash", "vnodes"):
            if name in body:
                command[name] = body[name]
    elif body.get("in_ring", True) is not False:
        # Into the ring: an online migration moves the keys that change owner (202: it runs
        # on; GET /admin/migrations/{id} follows it).
        body.pop("in_ring", None)
        result = await begin_add(coord, body)
        return respond(request, result, status=202)
    else:
        only_fields(body, {"shard", "weight", "in_ring"})
        command = {"op": "add_shard", **body}
    result = await coord.propose(command)
    return respond(request, result, status=201)


async def set_primary(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"node", "epoch"})
    result = await coord.propose({"op": "set_primary", "shard": request.match_info["shard"],
                                  **body})
    return respond(request, result)


async def set_ring(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"shards", "expected_version"})
    current = coord.watch.current
    wanted = body.get("shards")
    if isinstance(wanted, dict) and wanted != current.ring.shards:
        await refuse_ring_change_over_data(current, "changing the ring")
    result = await coord.propose({"op": "set_ring", **body})
    return respond(request, result)


async def add_member(request: web.Request) -> web.StreamResponse:
    """``{"node": id}``: a registered spare joins the shard, even beyond the replication
    factor (the explicit admin action a registration cannot stand in for)."""
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"node"})
    result = await coord.propose({"op": "add_member", "shard": request.match_info["shard"],
                                  **body})
    return respond(request, result)


async def drain_node(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    await read_object(request, allow_empty=True)
    result = await coord.propose({"op": "drain_node", "node": request.match_info["node_id"]})
    return respond(request, result)


async def remove_node(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    node_id = request.match_info["node_id"]
    result = await coord.propose({"op": "remove_node", "node": node_id})
    coord.liveness.forget(node_id)
    return respond(request, result)


async def set_node_status(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"status"})
    result = await coord.propose({"op": "set_node_status", "node": request.match_info["node_id"],
                                  **body})
    return respond(request, result)


async def list_coordinators(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    return respond(request, {
        "self": coord.config.id,
        "leader": coord.leader_id(),
        "raft": coord.raft.status(),
        "coordinators": {cid: c.to_dict()
                         for cid, c in sorted(coord.watch.current.coordinators.items())},
    })


async def add_coordinator(request: web.Request) -> web.StreamResponse:
    """Dynamic membership: ``{"raft": "HOST:PORT"}``. Start the new member first (``--join``,
    ``--peers`` naming every current member), then add it here; one member at a time."""
    coord = coordinator_of(request)
    body = await read_object(request)
    only_fields(body, {"raft"})
    addr = body.get("raft")
    if not isinstance(addr, str) or ":" not in addr:
        raise InvalidArgument("raft must be HOST:PORT")
    await coord.raft.add_member(addr, coord.config.commit_timeout)
    return respond(request, {"added": addr}, status=201)


async def remove_coordinator(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    target = request.match_info["coordinator"]
    info = coord.watch.current.coordinators.get(target)
    addr = info.raft if info is not None else target
    if ":" not in addr:
        raise NotFound(f"no coordinator {target!r} (name it by id or HOST:PORT)")
    await coord.raft.remove_member(addr, coord.config.commit_timeout)
    return respond(request, {"removed": addr})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/nodes", list_nodes)
    r.add_get("/admin/shards", list_shards)
    r.add_post("/admin/shards", add_shard)
    r.add_post("/admin/shards/{shard}/primary", set_primary)
    r.add_post("/admin/shards/{shard}/members", add_member)
    r.add_put("/admin/ring", set_ring)
    r.add_post("/admin/nodes/{node_id}/drain", drain_node)
    r.add_post("/admin/nodes/{node_id}/status", set_node_status)
    r.add_delete("/admin/nodes/{node_id}", remove_node)
    r.add_get("/admin/coordinators", list_coordinators)
    r.add_post("/admin/coordinators", add_coordinator)
    r.add_delete("/admin/coordinators/{coordinator}", remove_coordinator)

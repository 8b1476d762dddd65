"""``POST /v1/nodes/{id}/handoff``: a primary that is about to stop asks for a switchover.

A node receiving SIGTERM while it is a shard's primary calls this on the coordinator leader
(``node/replication/handoff.py``). The leader runs the planned switchover of
``coordinator/failover.py`` (fence, let the most caught-up replica reach the fenced LSN,
promote it through Raft) to whichever replica answers with the highest (epoch, LSN), and
answers once the map names the new primary. It is an internal route, guarded like a heartbeat
(``peer_guard.py``): only the node itself (signed as ``node:<id>``, ``cluster/peer_auth.py``)
may ask, since a node has no admin token; and it can only hand off a shard it is the primary
of, so it cannot move anyone else's role.

Answers: 200 ``{"shard", "old_primary", "primary", "epoch", "fenced_lsn", "pause_ms"}``;
421 ``NOT_PRIMARY`` from a follower coordinator (with ``leader_url``); 404 for an unknown
node; 409-free on purpose: a node that is not (or no longer) primary gets 200
``{"primary": <current>, "handed_off": false}`` so a repeated call is harmless;
503 ``UNAVAILABLE`` when no replica answers or none caught up in time (the primary was then
unfenced and keeps serving until it stops).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from shardkv.cluster import internal_routes as routes
from shardkv.cluster.errors import InvalidArgument, NotFound, NotPrimary
from shardkv.coordinator.failover import switchover
from shardkv.coordinator.http_io import coordinator_of, only_fields, read_object, respond

MAX_CATCH_UP_S = 60.0


async def hand_off(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    node_id = request.match_info["node_id"]
    body = await read_object(request, allow_empty=True)
    only_fields(body, {"catch_up_s", "epoch"})
    catch_up = body.get("catch_up_s", 5.0)
    if isinstance(catch_up, bool) or not isinstance(catch_up, int | float) \
            or not 0 < catch_up <= MAX_CATCH_UP_S:
        raise InvalidArgument(f"catch_up_s must be a number of seconds in (0, "
                              f"{MAX_CATCH_UP_S:g}]")
    if not coord.is_leader():
        raise NotPrimary("switchovers are run by the coordinator leader",
                         leader=coord.leader_id(), leader_url=coord.leader_url())
    cluster_map = coord.watch.current
    node = cluster_map.nodes.get(node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r} in the map", node_id=node_id)
    shard_id = node.shard or ""
    shard = cluster_map.shards.get(shard_id)
    if shard is None or shard.primary != node_id:
        return respond(request, {"shard": node.shard, "handed_off": False,
                                 "primary": shard.primary if shard else None})
    async with aiohttp.ClientSession() as session:
        done = await switchover(session, cluster_map, coord.propose, shard_id, None,
                                catch_up_s=float(catch_up))
    return respond(request, {"shard": done.shard, "handed_off": True,
                             "old_primary": done.old_primary, "primary": done.new_primary,
                             "epoch": done.epoch, "fenced_lsn": done.fenced_lsn,
                             "pause_ms": round(done.pause_s * 1000, 2)})


def add_routes(app: web.Application) -> None:
    app.router.add_post(routes.NODE_HANDOFF, hand_off)

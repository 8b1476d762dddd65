"""``shardkv status``: what the map says, checked against what each node says.

The map tells who should be primary; a ``ping`` to every member tells its actual role, epoch
and LSN. Showing both side by side is the point: a node the map calls primary that answers as
a replica, or a replica whose LSN trails, is exactly what an operator needs to see. Lag is in
records (the primary's LSN minus the member's); time staleness is on each node's /metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shardkv.client.async_client import Client
from shardkv.client.routing import DIRECT_SHARD
from shardkv.cluster.errors import ShardKVError


async def _probe(kv: Client, url: str, within: float) -> dict[str, Any]:
    try:
        answer = await kv.ping(url, timeout=within)
    except ShardKVError as exc:
        return {"health": "unreachable", "error": exc.code.value}
    return {
        "health": "ok",
        "lsn": answer.get("lsn"),
        "epoch": answer.get("epoch"),
        "actual_role": answer.get("role"),
        # A replica's own account of whether it has caught up (older nodes do not say).
        "sync": (answer.get("catch_up") or {}).get("summary"),
    }


async def collect_status(kv: Client, *, within: float = 2.0) -> dict[str, Any]:
    """A JSON-ready picture of the cluster: shards, members, roles, LSN, lag, health."""
    router = kv.router
    if router.direct:
        url = router.direct_url or ""
        probe = await _probe(kv, url, within)
        member = {"id": "standalone", "url": url, "role": "primary", "status": "up", **probe,
                  "lag": 0 if probe["health"] == "ok" else None}
        return {"mode": "direct", "map_version": None, "leader": None,
                "shards": [{"shard": DIRECT_SHARD, "epoch": probe.get("epoch"),
                            "primary": "standalone", "members": [member]}],
                "healthy": probe["health"] == "ok"}
    cmap = await kv.refresh_map()
    member_ids = sorted({m for s in cmap.shards.values() for m in s.members})
    probes = await asyncio.gather(
        *(_probe(kv, cmap.nodes[m].url, within) for m in member_ids if m in cmap.nodes)
    )
    by_node = dict(zip([m for m in member_ids if m in cmap.nodes], probes, strict=True))
    shards = []
    healthy = True
    degraded: list[str] = []  # members that do not answer: the shard serves, with less redundancy
    for shard_id, shard in sorted(cmap.shards.items()):
        primary_lsn = by_node.get(shard.primary or "", {}).get("lsn")
        members = []
        for member_id in shard.members:
            node = cmap.nodes.get(member_id)
            probe = by_node.get(member_id, {"health": "unknown"})
            lsn = probe.get("lsn")
            lag = (primary_lsn - lsn) if isinstance(primary_lsn, int) and isinstance(
                lsn, int) else None
            members.append({
                "id": member_id,
                "url": node.url if node else None,
                "role": "primary" if member_id == shard.primary else "replica",
                "status": node.status if node else "unknown",
                **probe,
                "lag": lag,
            })
        primary_ok = by_node.get(shard.primary or "", {}).get("health") == "ok"
        healthy = healthy and primary_ok
        degraded.extend(m["id"] for m in members if m.get("health") != "ok")
        shards.append({"shard": shard_id, "epoch": shard.epoch, "primary": shard.primary,
                       "state": shard.state, "members": members})
    return {"mode": "cluster", "map_version": cmap.version, "leader": cmap.leader,
            "ring_version": cmap.ring.version,
            "coordinators": {cid: c.url for cid, c in sorted(cmap.coordinators.items())},
            "shards": shards, "healthy": healthy and bool(shards), "degraded": degraded}


def _health(member: dict[str, Any]) -> str:
    """ok, unreachable, ..., or "catching up (N entries behind)" for a replica not yet in
    step with its primary; the map's status is added when it is not "up"."""
    health = member["health"]
    sync = member.get("sync")
    if health == "ok" and sync and sync != "caught up":
        health = sync
    return health if member.get("status") in (None, "up") else f"{health}/{member['status']}"


def render_status(status: dict[str, Any]) -> str:
    """The status as an aligned text table."""
    header = ("SHARD", "NODE", "ROLE", "ACTUAL", "EPOCH", "LSN", "LAG", "HEALTH", "URL")
    rows: list[tuple[str, ...]] = [header]
    for shard in status["shards"]:
        for m in shard["members"]:
            rows.append((
                shard["shard"], m["id"], m["role"], str(m.get("actual_role") or "-"),
                str(m.get("epoch") if m.get("epoch") is not None else "-"),
                str(m.get("lsn") if m.get("lsn") is not None else "-"),
                str(m["lag"] if m.get("lag") is not None else "-"),
                _health(m),
                m.get("url") or "-",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    if status["mode"] == "cluster":
        lines.append(f"map version {status['map_version']}, ring version "
                     f"{status['ring_version']}, coordinator leader {status['leader'] or '?'}")
    for row in rows:
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    if not status["healthy"]:
        lines.append("NOT HEALTHY: a shard has no reachable primary")
    elif status.get("degraded"):
        lines.append("degraded: every shard has a primary, but these members do not answer: "
                     + ", ".join(status["degraded"]))
    else:
        lines.append("healthy")
    return "\n".join(lines) + "\n"

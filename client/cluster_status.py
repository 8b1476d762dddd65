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
from shardkv.client.coordinator_quorum import probe_quorum
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
        "disk": answer.get("disk"),  # {"used_bytes", "free_bytes"}; None from older nodes
    }


def majority(members: int) -> int:
    return members // 2 + 1


def _start_hint(ids: list[str], needed: int) -> str:
    """"start n1 or n3 (`shardkv node start n1`)": what brings a shard back to a majority."""
    if not ids:
        return "no stopped member is left to start"
    choice = " or ".join(ids) if needed == 1 else f"{needed} of {', '.join(ids)}"
    return f"start {choice} (`shardkv node start {ids[0]}`)"


def explain_shard(shard_id: str, primary: str | None, members: list[dict[str, Any]]) -> \
        tuple[bool, str | None]:
    """(available, reason): why a shard cannot serve writes, or why it has less redundancy,
    in one sentence that names the way out. None when all is well."""
    alive = [m["id"] for m in members if m.get("health") == "ok"]
    down = [m["id"] for m in members if m.get("health") != "ok"]
    total, need = len(members), majority(len(members))
    count = f"{len(alive)} of {total} members alive"
    primary_entry = next((m for m in members if m["id"] == primary), None)
    if primary is None:
        return False, f"{shard_id}: no primary assigned; {count}"
    if primary_entry is None or primary_entry.get("health") != "ok":
        if len(alive) < need:
            return False, (f"{shard_id}: no primary; {count}; failover needs a majority "
                           f"({need}): {_start_hint(down, need - len(alive))}")
        return False, (f"{shard_id}: no primary; primary {primary} does not answer; {count}, "
                       f"a majority: a coordinator promotes the most advanced replica once "
                       f"the failover timeout passes (3 s by default)")
    if primary_entry.get("actual_role") not in (None, "primary"):
        return False, (f"{shard_id}: the map names {primary} primary but it answers as "
                       f"{primary_entry.get('actual_role')} (a failover is in progress)")
    if down:
        hint = _start_hint(down, len(down))
        if len(alive) < need:
            return True, (f"{shard_id}: serving reads only; {count}; majority writes need "
                          f"{need}: {hint}")
        return True, f"{shard_id}: serving with less redundancy; {count}: {hint}"
    return True, None


async def collect_status(kv: Client, *, within: float = 2.0) -> dict[str, Any]:
    """A JSON-ready picture of the cluster: shards, members, roles, LSN, lag, health.

    Fields agree with each other: a member's ``status`` is ``up`` only when the map counts it
    in *and* it answers (``map_status`` keeps the map's own word); ``healthy`` means every
    shard is available and no member is down; ``available`` that every shard has a reachable
    primary; each shard carries ``available`` and a ``reason`` sentence when something is
    wrong, and ``problems`` lists those sentences."""
    router = kv.router
    if router.direct:
        url = router.direct_url or ""
        probe = await _probe(kv, url, within)
        up = probe["health"] == "ok"
        member = {"id": "standalone", "url": url, "role": "primary",
                  "status": "up" if up else "down", "map_status": None, **probe,
                  "lag": 0 if up else None}
        reason = None if up else f"{DIRECT_SHARD}: the node at {url} does not answer"
        return {"mode": "direct", "map_version": None, "leader": None,
                "shards": [{"shard": DIRECT_SHARD, "epoch": probe.get("epoch"),
                            "primary": "standalone", "members": [member],
                            "available": up, "reason": reason}],
                "healthy": up, "available": up, "degraded": [] if up else ["standalone"],
                "problems": [reason] if reason else []}
    quorum = await probe_quorum(router.coordinators, within=within)
    try:
        cmap = await kv.refresh_map()
    except ShardKVError:
        if router.map is None:
            raise
        cmap = router.map  # no coordinator answers: the cached map still routes
    member_ids = sorted({m for s in cmap.shards.values() for m in s.members})
    probes = await asyncio.gather(
        *(_probe(kv, cmap.nodes[m].url, within) for m in member_ids if m in cmap.nodes)
    )
    by_node = dict(zip([m for m in member_ids if m in cmap.nodes], probes, strict=True))
    shards = []
    degraded: list[str] = []  # members that do not answer
    problems: list[str] = []
    for shard_id, shard in sorted(cmap.shards.items()):
        primary_lsn = by_node.get(shard.primary or "", {}).get("lsn")
        members = []
        for member_id in shard.members:
            node = cmap.nodes.get(member_id)
            probe = by_node.get(member_id, {"health": "unknown"})
            lsn = probe.get("lsn")
            lag = (primary_lsn - lsn) if isinstance(primary_lsn, int) and isinstance(
                lsn, int) else None
            map_status = node.status if node else "unknown"
            answers = probe.get("health") == "ok"
            members.append({
                "id": member_id,
                "url": node.url if node else None,
                "role": "primary" if member_id == shard.primary else "replica",
                "status": map_status if answers else "down",
                "map_status": map_status,
                **probe,
                "lag": lag,
            })
        available, reason = explain_shard(shard_id, shard.primary, members)
        degraded.extend(m["id"] for m in members if m.get("health") != "ok")
        if reason:
            problems.append(reason)
        shards.append({"shard": shard_id, "epoch": shard.epoch, "primary": shard.primary,
                       "state": shard.state, "members": members, "available": available,
                       "reason": reason})
    available_all = bool(shards) and all(s["available"] for s in shards)
    return {"mode": "cluster", "map_version": cmap.version, "leader": cmap.leader,
            "ring_version": cmap.ring.version,
            "coordinators": {cid: c.url for cid, c in sorted(cmap.coordinators.items())},
            "shards": shards, "available": available_all,
            "healthy": available_all and not degraded, "degraded": degraded,
            "problems": problems, "coordinator_quorum": quorum.to_dict(),
            "coordinators_line": quorum.line()}


async def explain_key(kv: Client, key: str | bytes) -> str | None:
    """Why the shard owning ``key`` cannot serve, from the map and a probe of its members
    (what a CLI adds to an UNAVAILABLE instead of a socket error); None if nothing is wrong
    or nothing can be learned."""
    try:
        status = await collect_status(kv, within=1.0)
        shard_id = kv.router.shard_of(key.encode() if isinstance(key, str) else key)
    except (TimeoutError, ShardKVError, OSError):
        return None
    for shard in status["shards"]:
        if shard["shard"] == shard_id:
            reason = shard.get("reason")
            return str(reason) if reason is not None else None
    return None


def _disk_cell(disk: dict[str, Any] | None) -> str:
    """``used/free`` in binary units, or ``-`` when the member did not say."""
    if not isinstance(disk, dict):
        return "-"
    return f"{_size(disk.get('used_bytes'))}/{_size(disk.get('free_bytes'))} free"


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def _health(member: dict[str, Any]) -> str:
    """ok, unreachable, ..., or "catching up (N entries behind)" for a replica not yet in
    step with its primary; the map's status is added when it is not "up"."""
    health = member["health"]
    sync = member.get("sync")
    if health == "ok" and sync and sync != "caught up":
        health = sync
    status = member.get("map_status")
    return health if status in (None, "up") else f"{health}/{status}"


def render_status(status: dict[str, Any]) -> str:
    """The status as an aligned text table."""
    header = ("SHARD", "NODE", "ROLE", "ACTUAL", "EPOCH", "LSN", "LAG", "DISK", "HEALTH",
              "URL")
    rows: list[tuple[str, ...]] = [header]
    for shard in status["shards"]:
        for m in shard["members"]:
            rows.append((
                shard["shard"], m["id"], m["role"], str(m.get("actual_role") or "-"),
                str(m.get("epoch") if m.get("epoch") is not None else "-"),
                str(m.get("lsn") if m.get("lsn") is not None else "-"),
                str(m["lag"] if m.get("lag") is not None else "-"),
                _disk_cell(m.get("disk")),
                _health(m),
                m.get("url") or "-",
            ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    if status["mode"] == "cluster":
        lines.append(f"map version {status['map_version']}, ring version "
                     f"{status['ring_version']}, coordinator leader {status['leader'] or '?'}")
        if status.get("coordinators_line"):
            lines.append(status["coordinators_line"])
    for row in rows:
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    if status["healthy"]:
        lines.append("healthy")
    else:
        lines.append("UNAVAILABLE: a shard has no reachable primary" if not status["available"]
                     else "degraded: every shard has a primary, but not every member answers")
        lines.extend(f"  {problem}" for problem in status.get("problems", []))
    return "\n".join(lines) + "\n"

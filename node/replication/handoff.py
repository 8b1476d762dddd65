"""Graceful handoff: a primary that is told to stop hands its shard to a replica first.

Without it a SIGTERM to a primary (what Kubernetes sends on every rolling update) stalls the
shard's writes until the coordinator leader notices the silence and fails over (about the
failover timeout, 3 s). With it, the stopping primary asks the coordinator leader
(``POST /v1/nodes/{id}/handoff``, ``coordinator/handoff_api.py``) for the planned switchover
that already exists: fence this primary, let the most caught-up replica reach the fenced
LSN, promote it through Raft. Writes pause only for that switchover (tens of ms); the
client's retries (exactly-once, ``docs/exactly-once.md``) carry them to the new primary.

The handoff is bounded by ``handoff_timeout_s`` (``SHARDKV_HANDOFF_TIMEOUT_S``, default 8 s;
keep it below the orchestrator's grace period; 0 turns it off). When no replica is eligible,
the coordinators do not answer or the bound runs out, the node says so in its log and stops
as it did before (the failure detector then fails the shard over). It runs as the first stop
hook, before replication and the coordinator link shut down and while the listener still
serves, so the coordinator can fence it and the replica can still stream from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import ROLE_PRIMARY
from shardkv.cluster.control_protocol import version_headers
from shardkv.cluster.peer_auth import node_principal, signed_headers
from shardkv.cluster.structured_log import log_fields

if TYPE_CHECKING:
    from shardkv.node.server import NodeServer

logger = logging.getLogger("shardkv.node.handoff")

# The share of the bound the switchover itself may use for the replica to catch up; the
# rest is for the calls and for this node to see the new map before it stops.
CATCH_UP_SHARE = 0.6
SEE_NEW_MAP_S = 2.0


class HandoffFailed(Exception):
    """The switchover did not happen; the message says why (logged, never raised out)."""


async def _ask_leader(session: aiohttp.ClientSession, candidates: list[str], node_id: str,
                      catch_up_s: float, deadline: float) -> dict[str, Any]:
    """POST the handoff to the coordinator leader, following 421 leader hints."""
    tried: set[str] = set()
    queue = list(candidates)
    last = "no coordinator is known"
    while queue and time.monotonic() < deadline:
        url = queue.pop(0)
        if url in tried:
            continue
        tried.add(url)
        remaining = max(0.1, deadline - time.monotonic())
        path = routes.node_handoff(node_id)
        body = wire.pack({"catch_up_s": round(catch_up_s, 3)})
        try:
            async with session.post(
                routes.url_of(url, path), data=body,
                headers={"Content-Type": wire.MSGPACK, "Accept": wire.MSGPACK,
                         **version_headers(),
                         # Signed as this node: only it may hand its own role over.
                         **signed_headers("POST", path, body, node_principal(node_id))},
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as resp:
                raw = await resp.read()
                answer = wire.unpack(raw) if wire.MSGPACK in resp.headers.get(
                    "Content-Type", "") else wire.from_json(raw or b"{}")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            last = f"{url}: {type(exc).__name__}: {exc}"
            continue
        if status == 200 and isinstance(answer, dict):
            return answer
        details = answer if isinstance(answer, dict) else {}
        leader_url = details.get("leader_url")
        if status == 421 and isinstance(leader_url, str) and leader_url not in tried:
            queue.insert(0, leader_url)
        last = f"{url} answered {status}: {details.get('error')}: {details.get('message')}"
    raise HandoffFailed(last)


class PrimaryHandoff:
    """The stop hook; see the module docstring. ``install()`` after replication's."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.last_result: dict[str, Any] | None = None

    def install(self) -> None:
        self.server.on_stop.insert(0, self._on_stop)

    def _candidates(self) -> list[str]:
        membership = self.server.membership
        link = membership.link if membership is not None else None
        if link is None:
            return []
        learned = [c.url for c in link.cluster_map.coordinators.values() if c.url]
        ordered = ([link.leader_url] if link.leader_url else []) + list(link.urls) + learned
        return list(dict.fromkeys(u for u in ordered if u))

    async def _on_stop(self, server: NodeServer) -> None:
        timeout = server.config.handoff_timeout_s
        ctx = server.ctx
        if server.membership is None or ctx.role != ROLE_PRIMARY:
            return
        if timeout <= 0:
            logger.info("handoff on stop is off (handoff_timeout_s 0): stopping as primary")
            return
        replication = getattr(server, "replication", None)
        members = list(getattr(replication, "members", []) or [])
        if len(members) < 2:
            logger.warning("no replica to hand the primary role to; stopping as primary",
                           extra=log_fields(members=members))
            return
        started = time.monotonic()
        deadline = started + timeout
        node_id = ctx.node_id or ""
        try:
            async with aiohttp.ClientSession() as session:
                answer = await _ask_leader(session, self._candidates(), node_id,
                                           max(0.1, timeout * CATCH_UP_SHARE), deadline)
        except HandoffFailed as exc:
            logger.warning("could not hand the primary role over (no eligible replica or no "
                           "coordinator leader answered); stopping as primary: the failure "
                           "detector will fail the shard over", extra=log_fields(
                               reason=str(exc), waited_s=round(time.monotonic() - started, 3)))
            return
        self.last_result = answer
        if not answer.get("handed_off"):
            logger.info("not the primary in the leader's map any more; nothing to hand off",
                        extra=log_fields(primary=answer.get("primary")))
            return
        # Wait (briefly) until this node has seen the new map: then NOT_PRIMARY answers
        # during the drain name the new primary, and it steps down before stopping.
        see_by = min(deadline, time.monotonic() + SEE_NEW_MAP_S)
        while ctx.role != "replica" and time.monotonic() < see_by:  # noqa: ASYNC110 (no event for a role change; bounded)
            await asyncio.sleep(0.01)
        logger.info("handed the primary role over", extra=log_fields(
            shard=answer.get("shard"), to=answer.get("primary"), epoch=answer.get("epoch"),
            fenced_lsn=answer.get("fenced_lsn"), pause_ms=answer.get("pause_ms"),
            took_ms=round((time.monotonic() - started) * 1000, 1), role=ctx.role))

"""Readiness that means caught up: a replica is ready only once it follows its primary
closely.

A restarted replica answered ``/ready`` as soon as its store was open, so an orchestrator
(a StatefulSet's rolling update, ``shardkv restart --rolling``) moved on to the next member
while this one was still replaying the primary's log: two members of a shard could then be
behind or down at once. Here a replica is ready only while its stream is connected, its
staleness (``ReplicationReplica.staleness_ms``: time since it last held everything its
primary had) is within ``ready_max_staleness_ms`` and it is at most
``ready_max_lag_entries`` behind the primary's last LSN it heard of. Other roles keep the
old meaning (store open, serving its role).

``catch_up_state`` is what ``/ready``, ``/v1/status`` and the ``ping`` op report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shardkv.cluster.cluster_map import ROLE_REPLICA

if TYPE_CHECKING:
    from shardkv.node.server import NodeServer


def catch_up_state(server: NodeServer) -> dict[str, Any] | None:
    """None when this node is not a replica; otherwise whether it is caught up, and by how
    much it trails (``{"caught_up", "lag_entries", "staleness_ms", "summary"}``)."""
    if server.ctx.role != ROLE_REPLICA:
        return None
    replica = getattr(getattr(server, "replication", None), "replica", None)
    if replica is None:
        return {"caught_up": False, "lag_entries": None, "staleness_ms": None,
                "summary": "catching up (not following a primary yet)"}
    stats = replica.stats()
    lag = int(stats["lag_entries"])
    staleness = stats["staleness_ms"]
    config = server.config
    caught_up = (bool(stats["connected"]) and staleness is not None
                 and staleness <= config.ready_max_staleness_ms
                 and lag <= config.ready_max_lag_entries)
    if caught_up:
        summary = "caught up"
    elif not stats["connected"]:
        summary = f"catching up (not connected to the primary, {lag} entries behind)"
    else:
        summary = f"catching up ({lag} entries behind)"
    return {"caught_up": caught_up, "lag_entries": lag,
            "staleness_ms": None if staleness is None else round(staleness, 1),
            "summary": summary}

"""The paths processes call on each other, defined once for the side that serves them and
the side that calls them.

A node serves the replication routes to other nodes (the stream) and to the coordinator (the
probe before a failover, fencing for a switchover); a coordinator serves the map and the
nodes' registration and heartbeats. The client-facing routes (``/v1/kv``, ``/v1/rpc``, the
admin API) are the public surface in ``DESIGN.md`` and stay with their servers.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

# Served by a node.
REPLICATE: Final = "/v1/replicate"  # the WebSocket stream, primary -> replica
REPLICATION_STATUS: Final = "/v1/replication"  # role, epoch, log end: the failover probe
DIGEST: Final = "/v1/digest"  # convergence check over a shard's members
FENCE: Final = "/admin/replication/fence"  # planned switchover, step 1
UNFENCE: Final = "/admin/replication/unfence"  # the switchover was abandoned
COMPACT: Final = "/admin/replication/compact"  # tests only: snapshot now

# Served by a coordinator.
MAP: Final = "/v1/map"
NODE_REGISTER: Final = "/v1/nodes/register"
NODE_HEARTBEAT: Final = "/v1/nodes/{node_id}/heartbeat"  # aiohttp route pattern
NODE_HANDOFF: Final = "/v1/nodes/{node_id}/handoff"  # a stopping primary asks for a switchover


def node_heartbeat(node_id: str) -> str:
    """``NODE_HEARTBEAT`` for one node (its id quoted as a path segment)."""
    return NODE_HEARTBEAT.format(node_id=quote(node_id, safe=""))


def node_handoff(node_id: str) -> str:
    """``NODE_HANDOFF`` for one node (its id quoted as a path segment)."""
    return NODE_HANDOFF.format(node_id=quote(node_id, safe=""))


def url_of(base: str, path: str) -> str:
    """``base`` (a process's URL, with or without a trailing slash) joined with ``path``."""
    return base.rstrip("/") + path

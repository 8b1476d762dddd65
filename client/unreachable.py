"""Naming the shard when its primary cannot be reached.

A connection error on its own ("cannot connect to http://127.0.0.1:41939") tells a user
nothing they can act on. When the executor gives up on a shard's primary, this turns the error
into one that says which shard, which node the map names as its primary, and what a failover
needs, from the map the client holds; the socket error stays at the end. ``shardkv status``
then says which members are alive and which to start.
"""

from __future__ import annotations

from shardkv.client.connection import ConnectionFailed
from shardkv.client.routing import Router
from shardkv.cluster.errors import ShardKVError


def name_the_shard(error: ShardKVError, router: Router, shard: str | None) -> ShardKVError:
    """``error`` with the shard and its primary named, if it is a connection failure on a
    routed call; any other error unchanged. Keeps the class and ``maybe_executed``."""
    if not isinstance(error, ConnectionFailed) or shard is None or router.direct:
        return error
    if error.details.get("shard") is not None:
        return error  # named already
    cmap = router.map
    info = cmap.shards.get(shard) if cmap is not None else None
    if cmap is None or info is None:
        return error
    node = cmap.nodes.get(info.primary) if info.primary else None
    members = ", ".join(info.members) or "none"
    majority = len(info.members) // 2 + 1
    message = (f"shard {shard}: its primary {info.primary} ({node.url if node else '?'}) does "
               f"not answer and map version {cmap.version} names no other yet; a failover "
               f"needs {majority} of its members ({members}) alive (`shardkv status` says "
               f"which are) [{error.message}]")
    named = ConnectionFailed(message, maybe_executed=error.maybe_executed,
                             **{**error.details, "shard": shard, "primary": info.primary})
    named.__cause__ = error
    return named

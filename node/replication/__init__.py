"""Replication of a shard: the primary's stream, the replica's log, the lease and the roles.

``NodeReplication`` (``shard_role``) is what the server plugs in; ``protocol`` is the wire
format both sides share.
"""

from shardkv.node.replication.shard_role import NodeReplication

__all__ = ["NodeReplication"]

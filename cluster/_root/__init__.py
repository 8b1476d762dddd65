"""shardkv: a distributed, sharded key-value cluster.

The distribution's parts live under this namespace: ``shardkv.node`` (storage node),
``shardkv.coordinator`` (Raft-replicated cluster map), ``shardkv.client``,
``shardkv.cluster`` (shared wire format, errors, config, launcher, CLI) and
``shardkv.chaos`` (fault-injection harness).
"""

__version__ = "0.1.0"

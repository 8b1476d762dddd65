"""shardkv.node: one storage node process.

Packages by concept (each ``__init__`` is that concept's public face):

- ``wal``: the write-ahead log (framing, segments, group commit, recovery of the log itself).
- ``storage``: the store on top of the WAL: engines (``storage.engines``), snapshots
  (``storage.snapshots``), write planning, the commit pipeline, TTLs, verification.
- ``replication``: the primary and replica sides of a shard, the stream protocol, the lease.
- ``membership``: the link to the coordinators and what the node learns from the map.
- ``api``: the REST and pipelined RPC front ends and the operation table they share.
- ``testing``: failpoints and the test clock, inert unless ``SHARDKV_TEST_ADMIN`` is set.
- ``migration``: the source and target sides of an online shard move (docs/resharding.md).
- ``watch``: key watches served from the WAL, then live (docs/watch.md).

Top-level modules are the process itself: ``server`` (assembly), ``config``, ``cli``,
``clock``, ``metrics``, and what a node does about its disk (``disk_admin``,
``maintenance_cli``, ``write_failure``). Layering: ``wal`` and ``storage`` never import
``replication``, ``membership`` or ``api`` (checked by the import contracts in
``scripts/test``).
"""

"""Backup, restore and point-in-time recovery of a whole cluster (docs/backup.md).

Two layers, so that a storage node can archive its log without pulling in the client:

- ``shardkv.backup.repository``: where backups live and how they are encoded (destinations,
  manifest, streaming zstd, AES-256-GCM, the WAL archive's layout, retention). It depends on
  the shared floor (``shardkv.cluster``) only; nodes import it for ``--archive-to``.
- the tools beside it (``create``, ``restore``, ``inspect``, ``cli``): ``shardkv backup ...``.
  They talk to the cluster over HTTP and through the client library, never by importing the
  node or the coordinator.
"""

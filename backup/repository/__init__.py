"""Where backups live and how they are encoded: destinations (a directory, S3), the manifest,
streamed zstd with optional AES-256-GCM, the WAL archive's layout and retention.

Depends on ``shardkv.cluster`` only (the node's WAL archiver uses it too)."""

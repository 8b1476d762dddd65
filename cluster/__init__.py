"""shardkv.cluster."""

"""shardkv.node."""

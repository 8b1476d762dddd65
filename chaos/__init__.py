"""shardkv.chaos."""

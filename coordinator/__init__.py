"""shardkv.coordinator."""

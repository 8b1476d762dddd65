"""shardkv.client."""

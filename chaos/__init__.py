"""shardkv.chaos: Jepsen-style fault injection, recorded histories and checkers (README.md)."""

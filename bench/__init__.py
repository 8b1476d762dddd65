"""shardkv's benchmarks: run from the repository root, e.g. ``python -m bench.node_bench``.

Not part of the installed distribution: the benchmarks start real processes (shardkv nodes,
and the reference systems of ``scripts/install-reference-systems.sh``) and load them.
"""

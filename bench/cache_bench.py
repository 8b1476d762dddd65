"""The client read cache's hit path against an uncached get, on one standalone node.

One client process, one node (memory engine, ``--fsync never``: reads do not touch the
disk anyway). ``--keys`` keys are written once; then ``--concurrency`` tasks read them in
turn for ``--seconds``: first with a plain ``Client`` (every get a round trip to the node),
then with ``Client(cache=CacheConfig())`` and ``consistency="eventual",
max_staleness_ms=1000`` (after the first read of each key, every get is served from the
cache while the invalidation stream keeps it fresh). Prints gets/s and p50/p99 latency of
each, and the cache's stats.

    nice python -m bench.cache_bench --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from shardkv.client import CacheConfig, Client

from bench.shardkv_node import shardkv_node


async def _run(url: str, cache: CacheConfig | None, keys: int, seconds: float,
               concurrency: int) -> dict[str, Any]:
    async with Client(nodes=[url], cache=cache) as kv:
        names = [f"cache-bench:{i}" for i in range(keys)]
        for name in names:
            await kv.put(name, b"v" * 100)
        if cache is not None:  # wait for the invalidation stream before measuring
            while kv.cache is not None and kv.cache.stats().hits == 0:
                await kv.get(names[0], consistency="eventual", max_staleness_ms=1000)
        latencies: list[float] = []
        deadline = time.monotonic() + seconds

        async def reader(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await kv.get(names[i % keys], consistency="eventual", max_staleness_ms=1000)
                latencies.append(time.perf_counter() - started)
                i += 1

        started = time.monotonic()
        await asyncio.gather(*(reader(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
        latencies.sort()
        return {"gets_s": round(len(latencies) / elapsed),
                "p50_us": round(statistics.median(latencies) * 1e6, 1),
                "p99_us": round(latencies[int(len(latencies) * 0.99)] * 1e6, 1),
                "stats": kv.cache.stats() if kv.cache is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            shardkv_node(Path(tmp), fsync="never").start() as node:
        for name, cache in (("uncached", None), ("cached", CacheConfig())):
            result = asyncio.run(_run(node.url, cache, args.keys, args.seconds,
                                      args.concurrency))
            print(f"{name:9} {result['gets_s']:>8} gets/s  p50 {result['p50_us']} us  "
                  f"p99 {result['p99_us']} us  {result['stats'] or ''}")


if __name__ == "__main__":
    main()

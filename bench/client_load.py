"""One load-generator process of the client benchmarks: ``shardkv.client.Client`` at a fixed
number of requests in flight (closed loop), for ``get``, ``put`` or ``mget100``.

It imports nothing from ``bench/``, only the installed client library, so that it can run
under another checkout's interpreter by path (``OTHER/.venv/bin/python bench/client_load.py
...``): the B side of an A/B comparison then drives its own cluster with its own client
(``bench/cluster_put_ab.py``). Run that way it prints ``window-start`` and ``window-end``
lines at the edges of the measured window, so that the parent samples the servers' CPU over
that window and no other, then one JSON line with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
from collections.abc import Callable
from typing import Any

from shardkv.client import Client

KEYSPACE = 10_000
VALUE = b"v" * 100
MGET_KEYS = 100


def key_of(i: int) -> bytes:
    return b"bench:%06d" % i


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def system_seconds() -> float:
    """The kernel's share of ``cpu_seconds`` (syscalls: socket sends on loopback run the
    receiver's TCP path too)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


async def drive(target: dict[str, Any], workload: str, in_flight: int, duration: float,
                warmup: float, seed: int,
                on_edge: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``workload`` with ``in_flight`` workers for ``warmup + duration`` seconds; count
    what started inside the window. ``on_edge("window-start" | "window-end")`` is called at
    the window's edges."""
    rng = random.Random(seed)
    latencies: list[float] = []
    ops = errors = 0
    cpu: dict[str, float] = {}
    async with Client(**target, timeout=10.0) as kv:
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup
        stop_at = measure_from + duration

        async def one() -> None:
            if workload == "get":
                await kv.get(key_of(rng.randrange(KEYSPACE)))
            elif workload == "put":
                await kv.put(key_of(rng.randrange(KEYSPACE)), VALUE)
            else:
                await kv.mget([key_of(i) for i in rng.sample(range(KEYSPACE), MGET_KEYS)])

        async def worker() -> None:
            nonlocal ops, errors
            while (now := loop.time()) < stop_at:
                try:
                    await one()
                except Exception:
                    if now >= measure_from:
                        errors += 1
                    continue
                if now >= measure_from:
                    ops += 1
                    latencies.append(loop.time() - now)

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, measure_from - loop.time()))
            cpu["start"], cpu["sys_start"] = cpu_seconds(), system_seconds()
            if on_edge is not None:
                on_edge("window-start")
            await asyncio.sleep(max(0.0, stop_at - loop.time()))
            cpu["end"], cpu["sys_end"] = cpu_seconds(), system_seconds()
            if on_edge is not None:
                on_edge("window-end")

        await asyncio.gather(sample_cpu(), *(worker() for _ in range(in_flight)))
    return {"ops": ops, "errors": errors, "latencies": latencies,
            "cpu_seconds": cpu["end"] - cpu["start"],
            "system_seconds": cpu["sys_end"] - cpu["sys_start"]}


async def preload(target: dict[str, Any]) -> None:
    """Write every key of the key space once (mputs of 500)."""
    async with Client(**target, timeout=30.0) as kv:
        batch = 500
        for start in range(0, KEYSPACE, batch):
            await kv.mput([(key_of(i), VALUE) for i in range(start, min(start + batch, KEYSPACE))])


def _print_edge(edge: str) -> None:
    print(edge, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coordinators", required=True, help="comma-separated coordinator URLs")
    p.add_argument("--workload", default="put", choices=("get", "put", "mget100", "preload"))
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=64)
    p.add_argument("--no-latencies", action="store_true",
                   help="leave the per-request latencies out of the result line")
    args = p.parse_args(argv)
    target = {"coordinators": args.coordinators.split(",")}
    if args.workload == "preload":
        asyncio.run(preload(target))
        print(json.dumps({"preloaded": KEYSPACE}), flush=True)
        return 0
    result = asyncio.run(drive(target, args.workload, args.in_flight, args.duration,
                               args.warmup, args.seed, _print_edge))
    if args.no_latencies:
        result.pop("latencies")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

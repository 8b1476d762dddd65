"""Coordinator benchmark: map fetch latency, watch fan-out, map changes committed per second.

Starts a real coordinator group (processes on 127.0.0.1, fsynced Raft journal, encrypted
Raft traffic), registers some nodes so the map has a realistic size, then measures:

- ``fetch``: ``GET /v1/map`` latency (JSON and msgpack), sequential, one keep-alive session;
- ``fanout``: ``--watchers`` long polls (``?since=V``) waiting; one map change; the time
  until the last watcher has the new map (repeated ``--rounds`` times);
- ``commits``: map changes committed per second through the leader, one at a time and
  with ``--concurrency`` in flight (each a primary move, ``set_primary``, through Raft).

Prints one JSON object and a table. Example::

    .venv/bin/python bench/coordinator_bench.py --members 3 --watchers 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
from shardkv.coordinator.local_group import LocalGroup


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def bench_fetch(session: aiohttp.ClientSession, url: str, n: int,
                      accept: str) -> dict[str, float]:
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(f"{url}/v1/map", headers={"Accept": accept}) as resp:
            await resp.read()
            assert resp.status == 200
        latencies.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies), "requests": n}


async def current_version(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/v1/map") as resp:
        return int((await resp.json())["version"])


async def bench_fanout(session: aiohttp.ClientSession, urls: list[str], leader: str,
                       watchers: int, rounds: int) -> dict[str, float]:
    results = []
    for _ in range(rounds):
        version = await current_version(session, leader)

        async def watch(i: int, since: int = version) -> float:
            url = urls[i % len(urls)]
            async with session.get(f"{url}/v1/map?since={since}&timeout=20") as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            return time.perf_counter()

        tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
        await asyncio.sleep(0.5)  # let every long poll reach its server
        t0 = time.perf_counter()
        async with session.post(f"{leader}/admin/shards", json={"in_ring": False}) as resp:
            assert resp.status == 201, await resp.text()
        done = await asyncio.gather(*tasks)
        results.append((max(done) - t0) * 1000)
    return {"watchers": watchers, "rounds": rounds,
            "all_seen_p50_ms": percentile(results, 50), "all_seen_max_ms": max(results)}


async def bench_commits(session: aiohttp.ClientSession, leader: str, seconds: float,
                        concurrency: int) -> dict[str, float]:
    """Primary moves (``set_primary``: a new epoch each time) round-robin over each shard's
    members: real map changes through Raft that keep the map the same size."""
    async with session.get(f"{leader}/v1/map") as resp:
        shards = {sid: s["members"] for sid, s in (await resp.json())["shards"].items()
                  if s["members"]}
    shard_ids = sorted(shards)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        turn = 0
        while time.perf_counter() < deadline:
            shard = shard_ids[w % len(shard_ids)]
            members = shards[shard]
            turn += 1
            body = {"node": members[turn % len(members)]}
            t0 = time.perf_counter()
            async with session.post(f"{leader}/admin/shards/{shard}/primary", json=body) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "commits": len(latencies),
            "commits_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="coordbench-") as tmp:
        group = LocalGroup(tmp, size=args.members, init_shards=args.shards,
                           replication_factor=3,
                           env={"SHARDKV_RAFT_PASSWORD": "bench-secret"})
        group.start_all()
        try:
            leader = (await group.wait_leader(timeout_s=30)).url
            urls = [m.url for m in group.members]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                for i in range(args.nodes):
                    async with session.post(f"{leader}/v1/nodes/register",
                                            json={"url": f"http://127.0.0.1:{20000 + i}"}):
                        pass
                size = len(await (await session.get(f"{leader}/v1/map")).read())
                out: dict[str, Any] = {
                    "members": args.members, "map_nodes": args.nodes, "map_json_bytes": size,
                    "fetch_json": await bench_fetch(session, leader, args.fetches,
                                                    "application/json"),
                    "fetch_msgpack": await bench_fetch(session, leader, args.fetches,
                                                       "application/msgpack"),
                    "fanout": await bench_fanout(session, urls, leader, args.watchers,
                                                 args.rounds),
                    "commits_serial": await bench_commits(session, leader, args.seconds, 1),
                    "commits_concurrent": await bench_commits(session, leader, args.seconds,
                                                              args.concurrency),
                }
        finally:
            group.stop_all()
    return out


def table(result: dict[str, Any]) -> str:
    rows = [
        ("map fetch JSON p50 / p99 (ms)",
         f"{result['fetch_json']['p50_ms']:.2f} / {result['fetch_json']['p99_ms']:.2f}"),
        ("map fetch msgpack p50 / p99 (ms)",
         f"{result['fetch_msgpack']['p50_ms']:.2f} / {result['fetch_msgpack']['p99_ms']:.2f}"),
        (f"watch fan-out to {result['fanout']['watchers']}: all seen p50 / max (ms)",
         f"{result['fanout']['all_seen_p50_ms']:.1f} / {result['fanout']['all_seen_max_ms']:.1f}"),
        ("map changes/s, 1 in flight (p50 ms)",
         f"{result['commits_serial']['commits_per_s']:.0f} "
         f"({result['commits_serial']['p50_ms']:.1f})"),
        (f"map changes/s, {result['commits_concurrent']['concurrency']} in flight (p50 ms)",
         f"{result['commits_concurrent']['commits_per_s']:.0f} "
         f"({result['commits_concurrent']['p50_ms']:.1f})"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"coordinator group of {result['members']}, map of {result['map_nodes']} nodes "
             f"({result['map_json_bytes']} bytes JSON)"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=3, choices=(1, 3, 5))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=12)
    parser.add_argument("--fetches", type=int, default=2000)
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

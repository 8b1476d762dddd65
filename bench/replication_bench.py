"""Replication benchmark: what write concern and replica reads cost and buy.

Starts a local cluster (one coordinator, one shard of three nodes: a primary and two
replicas) and, when etcd is installed, a three-member etcd cluster, then measures for a fixed
time each:

- put throughput with write concern ``majority`` and ``one`` (over ``/v1/rpc``, pipelined);
- get throughput from the primary only (``strong``), and ``eventual`` reads spread over one
  and over two replicas;
- etcd: put (a Raft commit on a majority), linearizable range (through the leader's read
  index) and serializable range spread over all three members (etcd's local reads).

The load generator is one asyncio process with ``--concurrency`` requests in flight per
connection; on a small machine it competes with the servers for CPU, so compare the *ratios*
(printed at the end) rather than absolute figures.

    python -m bench.replication_bench                         # ~1 min
    python -m bench.replication_bench --seconds 3 --concurrency 32 --json repl.json
    python -m bench.replication_bench --no-etcd --fsync never
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from shardkv.cluster.launcher import ClusterPlan, LocalCluster

from bench.etcd_cluster import etcd_cluster, stop_all
from bench.etcd_cluster import spawn_all as _spawn_all
from bench.etcd_cluster import wait_etcd as _wait_etcd
from bench.etcd_reference import EtcdGatewayClient, etcd_binary
from bench.rpc_client import RpcClient

VALUE = b"v" * 100
KEYS = 2000

Call = Callable[[int], Awaitable[Any]]


async def drive(calls: Sequence[Call], seconds: float, concurrency: int) -> dict[str, float]:
    """Run every ``call`` with ``concurrency`` workers each for ``seconds``; ops/s, errors,
    p50/p99 latency (ms)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker(call: Call, seed: int) -> None:
        nonlocal errors
        i = seed
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call(i % KEYS)
            except Exception:
                errors += 1
            else:
                latencies.append(time.perf_counter() - started)
            i += 7919
    started = time.monotonic()
    await asyncio.gather(*(worker(call, n * 131 + c)
                           for n, call in enumerate(calls) for c in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 \
            if latencies else float("nan")

    return {"ops_per_s": round(len(latencies) / elapsed, 1), "errors": errors,
            "p50_ms": round(pct(0.5), 3), "p99_ms": round(pct(0.99), 3)}


def _json_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


async def bench_shardkv(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    plan = ClusterPlan.new(work / "shardkv", shards=1, replicas=3, coordinators=1,
                           engine="memory", fsync=args.fsync)
    cluster = LocalCluster(work / "shardkv", plan)
    await asyncio.to_thread(cluster.start)
    try:
        await asyncio.to_thread(cluster.wait_ready, 90)
        cmap = await asyncio.to_thread(_json_get, f"{plan.coordinators[0].url}/v1/map")
        shard = cmap["shards"]["s1"]
        urls = {nid: cmap["nodes"][nid]["url"] for nid in shard["members"]}
        primary_url = urls[shard["primary"]]
        replica_urls = [u for nid, u in urls.items() if nid != shard["primary"]]
        await _wait_streaming(primary_url)
        primary = await RpcClient.open(primary_url)
        replicas = [await RpcClient.open(u) for u in replica_urls]
        try:
            for start in range(0, KEYS, 100):
                await primary.call("mput", {"items": [[b"k%d" % i, VALUE]
                                                      for i in range(start, start + 100)]})
            results: dict[str, Any] = {}
            for w in ("majority", "one"):
                results[f"put w={w}"] = await drive(
                    [lambda i, w=w: primary.call("put", {"key": b"k%d" % i, "value": VALUE,
                                                         "w": w})],
                    args.seconds, args.concurrency)
            await asyncio.sleep(0.5)  # let replicas settle before reading them

            def getter(client: RpcClient, eventual: bool) -> Call:
                extra = {"consistency": "eventual", "max_staleness_ms": 1000} if eventual \
                    else {"consistency": "strong"}
                return lambda i: client.call("get", {"key": b"k%d" % i, **extra})

            results["get primary (strong)"] = await drive(
                [getter(primary, False)], args.seconds, args.concurrency * 2)
            results["get 1 replica (eventual)"] = await drive(
                [getter(replicas[0], True)], args.seconds, args.concurrency * 2)
            results["get 2 replicas (eventual)"] = await drive(
                [getter(r, True) for r in replicas], args.seconds, args.concurrency)
            return results
        finally:
            for client in (primary, *replicas):
                await client.close()
    finally:
        cluster.stop()


async def _wait_streaming(primary_url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status = await asyncio.to_thread(_json_get, f"{primary_url}/v1/replication")
            if sum(1 for r in status.get("replicas", []) if r["connected"]) == 2 \
                    and status.get("lease") == "valid":
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the primary never streamed to both replicas")


async def bench_etcd(work: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    binary = etcd_binary()
    if binary is None or args.no_etcd:
        return None
    members = etcd_cluster(work, binary)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = await asyncio.to_thread(_spawn_all, members)
        await _wait_etcd([m.url for m in members])
        async with aiohttp.ClientSession() as session:
            clients = [EtcdGatewayClient(m.url, session) for m in members]
            leader = clients[0]
            for i in range(KEYS):
                await leader.put(b"k%d" % i, VALUE)

            async def rng(client: EtcdGatewayClient, i: int, serializable: bool) -> None:
                await client._post("/v3/kv/range", {"key": _b64(b"k%d" % i),
                                                    "serializable": serializable})

            return {
                "etcd put (majority)": await drive(
                    [lambda i: leader.put(b"k%d" % i, VALUE)], args.seconds, args.concurrency),
                "etcd range linearizable": await drive(
                    [lambda i: rng(leader, i, False)], args.seconds, args.concurrency * 2),
                "etcd range serializable, 3 members": await drive(
                    [lambda i, c=c: rng(c, i, True) for c in clients], args.seconds,
                    max(1, args.concurrency * 2 // 3)),
            }
    finally:
        stop_all(procs)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def bench_failover(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the primary ``args.failovers`` times under a write load; per kill, the
    seconds until the map names a new primary and until the first write acknowledged after
    the kill; the killed node is restarted (it rejoins as a replica) before the next."""
    from shardkv.client import Client, Retry
    from shardkv.client.retry import ExponentialBackoff

    plan = ClusterPlan.new(work / "failover", shards=1, replicas=3, coordinators=1,
                           engine="memory", fsync=args.fsync)
    cluster = LocalCluster(work / "failover", plan)
    await asyncio.to_thread(cluster.start)
    promoted: list[float] = []
    resumed: list[float] = []
    try:
        await asyncio.to_thread(cluster.wait_ready, 90)
        coordinator = plan.coordinators[0].url
        retry = Retry(ExponentialBackoff(base=0.02, cap=0.2), retries=1000)
        async with Client([coordinator], retry=retry, timeout=30.0) as kv:
            for round_no in range(args.failovers):
                cmap = await asyncio.to_thread(_json_get, f"{coordinator}/v1/map")
                old = cmap["shards"]["s1"]["primary"]
                await _wait_streaming(cmap["nodes"][old]["url"])
                killed_at = [float("inf")]
                first_after = [0.0]
                stop, resumed_event = asyncio.Event(), asyncio.Event()

                async def writer(w: int, r: int = round_no, stop: asyncio.Event = stop,
                                 killed_at: list[float] = killed_at,
                                 first_after: list[float] = first_after,
                                 resumed_event: asyncio.Event = resumed_event) -> None:
                    i = 0
                    while not stop.is_set():
                        with contextlib.suppress(Exception):
                            sent = time.monotonic()
                            await kv.put(f"f{r}-{w}-{i}", VALUE)
                            if sent > killed_at[0] and not resumed_event.is_set():
                                first_after[0] = time.monotonic()
                                resumed_event.set()
                        i += 1

                writers = [asyncio.create_task(writer(w)) for w in range(4)]
                await asyncio.sleep(0.5)
                killed = killed_at[0] = time.monotonic()
                await asyncio.to_thread(cluster.kill, old)
                while True:
                    cmap = await asyncio.to_thread(_json_get, f"{coordinator}/v1/map")
                    if cmap["shards"]["s1"]["primary"] not in (None, old):
                        promoted.append(time.monotonic() - killed)
                        break
                    await asyncio.sleep(0.02)
                await resumed_event.wait()
                resumed.append(first_after[0] - killed)
                stop.set()
                await asyncio.gather(*writers)
                await asyncio.to_thread(cluster.restart_dead)
    finally:
        await asyncio.to_thread(cluster.stop)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"min": round(ordered[0], 3), "median": round(statistics.median(ordered), 3),
                "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
                "max": round(ordered[-1], 3), "samples": [round(v, 3) for v in values]}

    return {"new_primary_s": summary(promoted), "writes_resumed_s": summary(resumed)}


def ratios(results: dict[str, dict[str, float]]) -> dict[str, float]:
    def r(a: str, b: str) -> float | None:
        if a in results and b in results and results[b]["ops_per_s"]:
            return round(results[a]["ops_per_s"] / results[b]["ops_per_s"], 2)
        return None

    pairs = {
        "put one / put majority": r("put w=one", "put w=majority"),
        "get 1 replica / get primary": r("get 1 replica (eventual)", "get primary (strong)"),
        "get 2 replicas / get primary": r("get 2 replicas (eventual)", "get primary (strong)"),
        "shardkv put majority / etcd put": r("put w=majority", "etcd put (majority)"),
        "shardkv get primary / etcd linearizable range": r("get primary (strong)",
                                                           "etcd range linearizable"),
        "shardkv get 2 replicas / etcd serializable range": r(
            "get 2 replicas (eventual)", "etcd range serializable, 3 members"),
    }
    return {k: v for k, v in pairs.items() if v is not None}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        work = Path(tmp)
        results = await bench_shardkv(work, args)
        etcd = await bench_etcd(work, args)
        if etcd:
            results.update(etcd)
        failover = await bench_failover(work, args) if args.failovers else None
    document = {"seconds": args.seconds, "concurrency": args.concurrency, "fsync": args.fsync,
                "results": results, "ratios": ratios(results)}
    if failover is not None:
        document["failover"] = failover
    return document


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--failovers", type=int, default=0,
                        help="also SIGKILL the primary N times under load and time failover")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    document = asyncio.run(run(args))
    width = max(len(k) for k in document["results"])
    for name, row in document["results"].items():
        print(f"{name:<{width}}  {row['ops_per_s']:>10.1f} ops/s  p50 {row['p50_ms']:>7.2f} ms"
              f"  p99 {row['p99_ms']:>7.2f} ms  errors {row['errors']}")
    for name, value in document["ratios"].items():
        print(f"{name}: {value}")
    for name, row in document.get("failover", {}).items():
        print(f"failover {name}: min {row['min']} median {row['median']} p90 {row['p90']} "
              f"max {row['max']} (n={len(row['samples'])})")
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Coordinator-outage benchmark (issue 19): what a shard serves while the coordinators are down.

Starts a local cluster (3 coordinators, 1 shard x 3 members, memory engine) and measures,
each for ``--seconds``, with ``--concurrency`` requests in flight on one pipelined ``/v1/rpc``
connection to the primary:

- ``healthy``: puts (write concern majority) and strong gets, coordinators up;
- ``outage``: the same with two of the three coordinators (the leader among them) SIGKILLed,
  starting ``--warmup`` seconds after the kill (the issue's "after the first second");
- ``gets/s c=64``: strong gets at concurrency 64 on a healthy cluster, the strong-read path's
  cost (run the same script on an older tree for the "before" figure).

Every operation has a 1 s budget; one not answered ok within it counts as unavailable. The
JSON goes to stdout (or ``--json``), then a table. Compare ratios on a small machine: the
load generator shares the CPU with the servers.

    python -m bench.coordinator_outage                     # ~40 s
    python -m bench.coordinator_outage --seconds 5 --json outage.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shardkv.cluster.launcher import ClusterPlan, LocalCluster

from bench.rpc_client import RpcClient

VALUE = b"v" * 100
KEYS = 1000
OP_BUDGET_S = 1.0

Call = Callable[[int], Awaitable[Any]]


def _json_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def drive(call: Call, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` workers calling ``call`` for ``seconds``; availability, rate, p50/p99."""
    ok: list[float] = []
    failed = 0
    counter = iter(range(1 << 62))
    ends = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal failed
        while time.monotonic() < ends:
            i = next(counter)
            started = time.monotonic()
            try:
                await asyncio.wait_for(call(i % KEYS), OP_BUDGET_S)
            except Exception:
                failed += 1
                continue
            ok.append(time.monotonic() - started)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    total = len(ok) + failed
    return {"ops": total, "ok": len(ok), "availability": round(len(ok) / total, 5) if total
            else None, "ops_per_s": round(len(ok) / elapsed, 1), "p50_ms": _p(ok, 0.5),
            "p99_ms": _p(ok, 0.99)}


async def _until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _leased(url: str) -> bool:
    try:
        status = _json_get(f"{url}/v1/replication")
    except (OSError, ValueError):
        return False
    return status.get("lease") == "valid" and sum(
        1 for r in status.get("replicas", []) if r.get("connected")) == 2


async def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    plan = ClusterPlan.new(work, shards=1, replicas=3, coordinators=3, engine="memory",
                           fsync="never")
    cluster = LocalCluster(work, plan)
    await asyncio.to_thread(cluster.start)
    try:
        await asyncio.to_thread(cluster.wait_ready, 90)
        cmap = await asyncio.to_thread(_json_get, f"{plan.coordinators[0].url}/v1/map")
        shard = cmap["shards"]["s1"]
        primary_url = cmap["nodes"][shard["primary"]]["url"]
        await _until(lambda: _leased(primary_url), 30, "the primary's lease")
        client = await RpcClient.open(primary_url)
        try:
            for start in range(0, KEYS, 100):
                await client.call("mput", {"items": [[b"k%d" % i, VALUE]
                                                     for i in range(start, start + 100)]})

            def put(i: int) -> Awaitable[Any]:
                return client.call("put", {"key": b"k%d" % i, "value": VALUE})

            def get(i: int) -> Awaitable[Any]:
                return client.call("get", {"key": b"k%d" % i, "consistency": "strong"})

            results: dict[str, Any] = {"phases": {}}
            results["phases"]["healthy"] = {
                "put": await drive(put, args.seconds, args.concurrency),
                "get strong": await drive(get, args.seconds, args.concurrency)}
            results["gets_per_s_c64"] = (await drive(get, args.seconds, 64))["ops_per_s"]
            ids = [c.id for c in plan.coordinators]
            leader = cmap.get("leader") if cmap.get("leader") in ids else ids[0]
            victims = [leader, next(i for i in ids if i != leader)]
            for victim in victims:
                cluster.kill(victim)
            await asyncio.sleep(args.warmup)
            results["phases"]["outage"] = {
                "put": await drive(put, args.seconds, args.concurrency),
                "get strong": await drive(get, args.seconds, args.concurrency)}
            results["lease_during_outage"] = (await asyncio.to_thread(
                _json_get, f"{primary_url}/v1/replication")).get("lease_detail")
            for victim in victims:
                cluster.restart(victim)
            results["coordinators_killed"] = victims
            return results
        finally:
            await client.close()
    finally:
        cluster.stop()


def table(results: dict[str, Any]) -> str:
    lines = [f"{'phase':<9} {'op':<11} {'avail':>8} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}"]
    for phase, ops in results["phases"].items():
        for op, r in ops.items():
            lines.append(f"{phase:<9} {op:<11} {r['availability']!s:>8} {r['ops_per_s']:>9} "
                         f"{r['p50_ms']!s:>8} {r['p99_ms']!s:>8}")
    lines.append(f"strong gets/s at c=64 (healthy): {results['gets_per_s_c64']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shardkv-outage-") as tmp:
        results = asyncio.run(run(Path(tmp), args))
    text = json.dumps(results, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    print(table(results), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

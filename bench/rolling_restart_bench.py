"""The write pause of a primary restart, without and with the graceful handoff, and the time
of a whole rolling restart; one run, printing a table and JSON.

Two local clusters of 2 shards x 3 members and 3 coordinators (memory engine, fsync never:
the pause is about roles, not the disk), each under ``--clients`` writers
(``bench/write_load.py``):

- **before**: nodes started with ``SHARDKV_HANDOFF_TIMEOUT_S=0`` (stop as the node did before
  the handoff existed); SIGTERM each primary in turn: the shard waits for the failure
  detector (the failover timeout) to promote a replica;
- **after**: handoff on (the default); a full ``RollingRestart`` (replicas, each primary after
  a handoff, coordinators with the leader last).

For each primary restart, the puts in flight between its SIGTERM and the moment the map
names another primary are its pause window: their max and p99 latency are reported. The
total time of the rolling restart is reported too.

    nice python -m bench.rolling_restart_bench            # ~3 min on 2 busy cores
    nice python -m bench.rolling_restart_bench --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from shardkv.cluster.launcher import ClusterPlan, LocalCluster, http_get_json
from shardkv.cluster.process_control import OwnedProcesses
from shardkv.cluster.rolling_restart import RollingRestart

from bench.write_load import WriteLoad, latency_summary

HANDOFF_ENV = "SHARDKV_HANDOFF_TIMEOUT_S"


def _primaries(cluster: LocalCluster) -> dict[str, str]:
    for c in cluster.plan.coordinators:
        status, cmap = http_get_json(f"{c.url}/v1/map")
        if status == 200 and isinstance(cmap, dict):
            return {sid: s.get("primary") for sid, s in (cmap.get("shards") or {}).items()}
    return {}


def _start(directory: Path, handoff: bool) -> LocalCluster:
    os.environ[HANDOFF_ENV] = "8" if handoff else "0"
    plan = ClusterPlan.new(directory, shards=2, replicas=3, coordinators=3,
                           engine="memory", fsync="never")
    cluster = LocalCluster(directory, plan)
    cluster.start()
    cluster.wait_ready(120)
    return cluster


async def _new_primary_seen(cluster: LocalCluster, shard: str, old: str,
                            within: float = 60.0) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        primary = (await asyncio.to_thread(_primaries, cluster)).get(shard)
        if primary and primary != old:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise RuntimeError(f"shard {shard} got no new primary within {within}s")


async def before(directory: Path, clients: int) -> dict[str, Any]:
    cluster = _start(directory, handoff=False)
    control = OwnedProcesses(cluster)
    load = WriteLoad(cluster.plan.coordinator_urls(), clients=clients)
    pauses = {}
    try:
        await load.start()
        await asyncio.sleep(2)
        for shard, old in sorted(_primaries(cluster).items()):
            since = time.monotonic()
            stop = asyncio.create_task(asyncio.to_thread(control.stop_gracefully, old, 30.0))
            seen = await _new_primary_seen(cluster, shard, old)
            await stop
            await asyncio.sleep(0.5)  # let the stalled puts finish and be counted
            pauses[f"{shard} ({old})"] = latency_summary(load.window(since, seen))
            await asyncio.to_thread(control.start_again, old)
            await asyncio.to_thread(cluster.wait_ready, 120)
        await load.stop()
        lost = await load.verify()
    finally:
        await load.close()
        cluster.stop()
    return {"mode": "before (SIGTERM, no handoff)", "per_primary": pauses,
            "lost": len(lost), "errors": len(load.errors)}


async def after(directory: Path, clients: int) -> dict[str, Any]:
    cluster = _start(directory, handoff=True)
    load = WriteLoad(cluster.plan.coordinator_urls(), clients=clients)
    try:
        await load.start()
        await asyncio.sleep(2)
        report = await asyncio.to_thread(
            RollingRestart(OwnedProcesses(cluster), say=lambda _: None).run)
        pauses = {}
        for step in report.steps:
            if step.kind == "primary":
                until = step.began_at + step.stop_s
                pauses[f"{step.shard} ({step.process})"] = latency_summary(
                    load.window(step.began_at, until))
        whole = latency_summary([d for s, d in load.samples])
        await load.stop()
        lost = await load.verify()
    finally:
        await load.close()
        cluster.stop()
    return {"mode": "after (handoff, full rolling restart)", "per_primary": pauses,
            "rolling_restart_total_s": round(report.total_s, 2),
            "puts_during_roll": whole, "lost": len(lost), "errors": len(load.errors),
            "steps": report.to_dict()["steps"]}


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'mode':40} {'primary':14} {'puts':>6} {'max ms':>9} {'p99 ms':>9}"]
    for r in results:
        for name, s in r["per_primary"].items():
            lines.append(f"{r['mode']:40} {name:14} {s['puts']:>6} {s['max_ms']:>9} "
                         f"{s['p99_ms']:>9}")
    for r in results:
        if "rolling_restart_total_s" in r:
            lines.append(f"rolling restart of 2x3 + 3 coordinators: "
                         f"{r['rolling_restart_total_s']} s; all puts during it: "
                         f"{r['puts_during_roll']}")
        lines.append(f"{r['mode']}: lost writes {r['lost']}, failed puts {r['errors']}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="rolling-bench-"))
    try:
        return [await before(root / "before", args.clients),
                await after(root / "after", args.clients)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(table(results))
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

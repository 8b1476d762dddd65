"""What cluster authentication costs on the hot path: rpc put/get throughput of a cluster with
the credential (signed heartbeats and registration, mutually authenticated replication
streams, signed fencing) against the same cluster shape without it, in one run.

Both clusters (1 coordinator, 1 shard x 3 members, majority writes) run side by side for
the whole run, and the rounds alternate which one is loaded first, so drift on a shared
machine (other work, thermal) falls on both alike. Each cell is the median of ``--rounds``
measurements.

    nice python -m bench.auth_overhead                 # ~2 min on 2 cores
    nice python -m bench.auth_overhead --rounds 3 --duration 2 --json out.json
    nice python -m bench.auth_overhead --control     # A/A: both without auth (noise floor)

Prints a table and, with ``--json``, writes the rows (and every round) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from shardkv.cluster.launcher import ClusterPlan, LocalCluster

from bench.client_bench import _preload
from bench.client_load import drive

WORKLOADS = ("put", "get")


def _start(directory: Path, secure: bool, fsync: str) -> LocalCluster:
    plan = ClusterPlan.new(directory, shards=1, replicas=3, coordinators=1, fsync=fsync)
    cluster = LocalCluster(directory, plan)
    if secure:
        cluster.secure()
    cluster.start()
    cluster.wait_ready(120)
    return cluster


def _measure(cluster: LocalCluster, workload: str, in_flight: int, duration: float) -> float:
    target: dict[str, Any] = {"coordinators": cluster.plan.coordinator_urls()}
    result = asyncio.run(drive(target, workload, in_flight, duration, 0.5, 7))
    return result["ops"] / duration


def run(rounds: int, duration: float, in_flight: int, fsync: str,
        control: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shardkv-auth-bench-"))
    clusters: dict[str, LocalCluster] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        # --control: an A/A run, both clusters without the credential, to see how far apart
        # two identical clusters measure on this machine (the noise floor of the A/B figure).
        for label, secure in (("auth on", not control), ("auth off", False)):
            clusters[label] = _start(work / label.replace(" ", "-"), secure, fsync)
            asyncio.run(_preload({"coordinators": clusters[label].plan.coordinator_urls()}))
        for r in range(rounds):
            order = ["auth on", "auth off"] if r % 2 == 0 else ["auth off", "auth on"]
            for workload in WORKLOADS:
                for label in order:
                    ops = _measure(clusters[label], workload, in_flight, duration)
                    samples.setdefault((label, workload), []).append(ops)
                    print(f"round {r + 1} {workload:3} {label:8} {ops:9.0f} ops/s", flush=True)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    rows = []
    for workload in WORKLOADS:
        on = statistics.median(samples[("auth on", workload)])
        off = statistics.median(samples[("auth off", workload)])
        rows.append({"workload": workload, "in_flight": in_flight, "auth_on_ops": round(on),
                     "auth_off_ops": round(off), "ratio": round(on / off, 3),
                     "overhead_pct": round((1 - on / off) * 100, 1)})
    return {"rounds": rounds, "duration_s": duration, "fsync": fsync, "control": control,
            "rows": rows,
            "samples": {f"{label}/{workload}": values
                        for (label, workload), values in samples.items()}}


def table(report: dict[str, Any]) -> str:
    lines = ["workload  in_flight  auth on ops/s  auth off ops/s  on/off  overhead"]
    for row in report["rows"]:
        lines.append(f"{row['workload']:8}  {row['in_flight']:9}  {row['auth_on_ops']:13}  "
                     f"{row['auth_off_ops']:14}  {row['ratio']:6.3f}  "
                     f"{row['overhead_pct']:7.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--control", action="store_true",
                        help="A/A: both clusters without the credential (the noise floor)")
    args = parser.parse_args(argv)
    report = run(args.rounds, args.duration, args.in_flight, args.fsync, args.control)
    print(table(report))
    print(json.dumps(report["rows"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

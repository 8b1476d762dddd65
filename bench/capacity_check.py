"""Checks docs/capacity.md's model on this machine: 1 shard vs 2 shards (3 members each).

    python -m bench.capacity_check                  # 3 alternated rounds, put and get, c=64
    python -m bench.capacity_check --rounds 5 --json cap.json

Each round starts a fresh 1x3 and a fresh 2x3 cluster (one coordinator, memory engine,
``fsync always``), in alternating order, and drives them through ``shardkv.client.Client``
(routing, majority writes) from one generator process at concurrency 64, as
``bench/client_bench.py`` does. It reports throughput, p50, the generator's cores and the
cores all the nodes used, and the CPU microseconds every node together spent per operation:
the inputs and the outcome the model of docs/capacity.md is checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client_bench import _preload, run_cell
from bench.cost_systems import Variant, shardkv_replicated
from bench.proc_stats import group_cpu_seconds


def measure(shards: int, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with shardkv_replicated(work, Variant(f"{shards}x3"), args.fsync, shards=shards) as running:
        target = {"coordinators": running.detail["coordinators"]}
        asyncio.run(_preload(target))
        pids = running.detail["node_pids"]
        for workload in args.workloads.split(","):
            before, started = group_cpu_seconds(pids), time.monotonic()
            cell = run_cell(target, workload, args.concurrency, 1, args.duration, args.warmup)
            cores = (group_cpu_seconds(pids) - before) / (time.monotonic() - started)
            rows.append({"shards": shards, "workload": workload, "ops_per_s": cell.ops_per_s,
                         "p50_ms": cell.p50_ms, "p99_ms": cell.p99_ms,
                         "gen_cores": cell.gen_cpu_cores, "node_cores": cores,
                         "node_us_per_op": cores * 1e6 / cell.ops_per_s if cell.ops_per_s
                         else None, "errors": cell.errors, "load": os.getloadavg()[0]})
            print(f"{shards} shard(s) {workload}: {cell.ops_per_s:,.0f}/s p50 {cell.p50_ms} ms "
                  f"nodes {cores:.2f} cores, gen {cell.gen_cpu_cores:.2f} cores, "
                  f"load {rows[-1]['load']:.1f}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity_check", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--workloads", default="put,get")
    p.add_argument("--fsync", default="always")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shardkv-capacity-") as temp:
        for round_no in range(args.rounds):
            for shards in ((1, 2) if round_no % 2 == 0 else (2, 1)):
                where = Path(temp) / f"r{round_no}-{shards}"
                where.mkdir(parents=True)
                for row in measure(shards, where, args):
                    rows.append({"round": round_no, **row})
    summary = []
    for workload in args.workloads.split(","):
        for shards in (1, 2):
            mine = [r for r in rows if r["shards"] == shards and r["workload"] == workload]
            med = {k: statistics.median([r[k] for r in mine if r[k] is not None])
                   for k in ("ops_per_s", "p50_ms", "gen_cores", "node_cores",
                             "node_us_per_op", "load")}
            summary.append({"shards": shards, "workload": workload, **med})
            rates = [r["ops_per_s"] for r in mine]
            print(f"{workload} {shards}x3: {med['ops_per_s']:,.0f}/s (range "
                  f"{min(rates):,.0f}..{max(rates):,.0f})"
                  f", p50 {med['p50_ms']:.2f} ms, nodes {med['node_cores']:.2f} cores "
                  f"({med['node_us_per_op']:.0f} us/op), generator {med['gen_cores']:.2f} cores")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"rows": rows, "medians": summary},
                                                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

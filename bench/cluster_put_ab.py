"""Puts through the client library on a 2x3 cluster: node CPU per put, A/B, and vs etcd.

    python -m bench.cluster_put_ab --b-python ../base/.venv/bin/python --rounds 3
    python -m bench.cluster_put_ab --rounds 1 --no-etcd --profile prof/  # py-spy, 2 nodes of A

The shape of issue 17's goal "rpc through the client library on ``shardkv up`` (2 shards x 3
members, majority writes) vs a 3-member etcd: put >= 2x at concurrency 64": each round starts
a fresh cluster per side (3 coordinators, 2 shards of 3 members, memory engine, ``fsync
always``) and a fresh 3-member etcd, in an order that rotates from round to round, and puts
100-byte values to 10,000 preloaded keys from one client process with 64 in flight.

Why another benchmark: ``client_bench`` gives the rate only. On two shared cores the rate is
mostly the other tenants; what a change does to the cluster is its CPU per put, so this reads
``/proc/<pid>/stat`` of every node and coordinator over exactly the measured window (the
load process, ``client_load.py``, prints the window's edges) and reports, per put: all six
nodes, the primaries, the replicas, the coordinators and the client, plus each node's WAL
group size (entries per fsync, from ``/metrics``) and the primaries' entries per replication
frame. The B side runs another checkout's interpreter for the nodes, the coordinators *and*
the client (``client_load.py`` imports only the installed client library), so a client-side
change is measured too. Ratios are per round, then the median (with the range).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardkv.cluster.launcher import LocalCluster

from bench.client_bench import preloaded_etcd
from bench.client_cells import percentile
from bench.cost_systems import _environment, _Plan, _wait_streaming
from bench.etcd_reference import etcd_binary
from bench.loadgen import LoadSpec, run_load
from bench.proc_stats import process_cpu_seconds, process_cpu_split
from bench.profiler import profiled
from bench.server_metrics import scrape, summarize

LOAD_SCRIPT = Path(__file__).resolve().parent / "client_load.py"
GC_PROBE = Path(__file__).resolve().parent / "gc_probe"
REPO = LOAD_SCRIPT.parent.parent


@dataclass(frozen=True, slots=True)
class Side:
    name: str
    python: str
    env: tuple[tuple[str, str], ...] = ()  # on top of ours, for its cluster and client


def _json_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def _cluster(work: Path, side: Side) -> Iterator[tuple[LocalCluster, Any, dict[str, Any]]]:
    plan = _Plan.new(work, shards=2, replicas=3, coordinators=3, engine="memory",
                     fsync="always")
    plan.python = side.python
    cluster = LocalCluster(work, plan)
    with _environment(dict(side.env)):
        cluster.start()
    try:
        cluster.wait_ready(120)
        cmap = _json_get(f"{plan.coordinators[0].url}/v1/map")
        for shard in cmap["shards"].values():
            asyncio.run(_wait_streaming(cmap["nodes"][shard["primary"]]["url"], 2))
        yield cluster, plan, _json_get(f"{plan.coordinators[0].url}/v1/map")
    finally:
        cluster.stop()


def _load(side: Side, coordinators: list[str], workload: str, args: argparse.Namespace,
          on_edge: Any = None) -> dict[str, Any]:
    """Run ``client_load.py`` under ``side``'s interpreter; ``on_edge(edge)`` at the edges."""
    argv = [side.python, str(LOAD_SCRIPT), "--coordinators", ",".join(coordinators),
            "--workload", workload, "--in-flight", str(args.concurrency),
            "--duration", str(args.duration), "--warmup", str(args.warmup)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **dict(side.env)})
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            result = json.loads(line)
        elif on_edge is not None and line:
            on_edge(line)
    if proc.wait() != 0 or not result:
        raise RuntimeError(f"the load process failed ({proc.returncode}): {' '.join(argv)}")
    return result


def _replication(primary_urls: list[str]) -> tuple[float, float]:
    frames = entries = 0.0
    for url in primary_urls:
        with contextlib.suppress(OSError, ValueError):
            for r in _json_get(f"{url}/v1/replication").get("replicas", []):
                frames += r.get("frames_sent", 0)
                entries += r.get("entries_sent", 0)
    return frames, entries


def _gc_seconds(directory: Path, pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per process: (seconds in collections, longest pause) between its first two dumps."""
    out = {}
    for name, pid in pids.items():
        path = directory / f"gc-{pid}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) < 2:
            continue
        first, last = json.loads(lines[0]), json.loads(lines[1])
        seconds = sum(last["gen"][g][1] - first["gen"][g][1] for g in last["gen"])
        out[name] = (seconds, last["gen"]["2"][2])
    return out


def measure_shardkv(side: Side, work: Path, args: argparse.Namespace,
                    profile_dir: Path | None) -> dict[str, Any]:
    gc_dir = work.parent / f"{work.name}-gc"
    if args.gc_probe:
        gc_dir.mkdir(parents=True, exist_ok=True)
        side = Side(side.name, side.python, (*side.env, ("SHARDKV_GC_PROBE_DIR", str(gc_dir)),
                                             ("PYTHONPATH", str(GC_PROBE))))
    with _cluster(work, side) as (cluster, plan, cmap):
        coordinators = plan.coordinator_urls()
        _load(side, coordinators, "preload", args)
        role = {}
        for shard in cmap["shards"].values():
            for member in shard["members"]:
                role[member] = "primary" if member == shard["primary"] else "replica"
        nodes = {spec.id: (cluster.pid_of(spec.id), spec.url) for spec in plan.nodes}
        coord_pids = [cluster.pid_of(c.id) for c in plan.coordinators]
        primary_urls = [url for nid, (_, url) in nodes.items() if role[nid] == "primary"]
        marks: dict[str, Any] = {}

        def cpu_now() -> dict[str, float]:
            out = {nid: process_cpu_seconds(pid) for nid, (pid, _) in nodes.items() if pid}
            out["sys"] = sum(process_cpu_split(pid)[1] for pid, _ in nodes.values() if pid)
            for i, pid in enumerate(coord_pids):
                if pid:
                    out[f"c{i + 1}"] = process_cpu_seconds(pid)
            return out

        profiles: list[contextlib.AbstractContextManager[Any]] = []

        def probe_gc() -> None:
            if args.gc_probe:
                for pid, _ in nodes.values():
                    if pid:
                        os.kill(pid, signal.SIGUSR2)
                for pid in coord_pids:
                    if pid:
                        os.kill(pid, signal.SIGUSR2)

        def on_edge(edge: str) -> None:
            probe_gc()
            if edge == "window-start":
                marks["t0"], marks["cpu0"] = time.monotonic(), cpu_now()
                marks["repl0"] = _replication(primary_urls)
                if profile_dir is not None:
                    first_primary = next(n for n in nodes if role[n] == "primary")
                    first_replica = next(n for n in nodes if role[n] == "replica")
                    for nid in (first_primary, first_replica):
                        out = profile_dir / f"{work.name}-{role[nid]}-{nid}.txt"
                        manager = profiled(nodes[nid][0], out, args.duration, rate=200,
                                           fmt="raw", native=args.profile_native)
                        manager.__enter__()
                        profiles.append(manager)
            elif edge == "window-end":
                marks["t1"], marks["cpu1"] = time.monotonic(), cpu_now()
                marks["repl1"] = _replication(primary_urls)

        idle: dict[str, float] = {}
        if args.idle > 0:  # the background: what the cluster burns with no load at all
            before, started = cpu_now(), time.monotonic()
            time.sleep(args.idle)
            after, took = cpu_now(), time.monotonic() - started
            idle = {k: (after[k] - before[k]) / took for k in after}
        metrics_before = {nid: scrape(url) for nid, (_, url) in nodes.items()}
        result = _load(side, coordinators, "put", args, on_edge)
        metrics_after = {nid: scrape(url) for nid, (_, url) in nodes.items()}
        for manager in profiles:
            manager.__exit__(None, None, None)
        gc_pids = {nid: pid for nid, (pid, _) in nodes.items() if pid}
        gc_pids.update({f"c{i + 1}": pid for i, pid in enumerate(coord_pids) if pid})
        time.sleep(0.2 if args.gc_probe else 0)  # the last dumps
        gc_used = _gc_seconds(gc_dir, gc_pids) if args.gc_probe else {}
    ops = result["ops"]
    wall = marks["t1"] - marks["t0"]
    used = {k: marks["cpu1"][k] - marks["cpu0"].get(k, marks["cpu1"][k]) for k in marks["cpu1"]}

    def per_put(ids: list[str]) -> float | None:
        return sum(used[i] for i in ids) * 1e6 / ops if ops else None

    node_ids = sorted(nodes)
    groups = {nid: summarize(metrics_before[nid], metrics_after[nid]).get("entries_per_group")
              for nid in node_ids}

    def mean_group(which: str) -> float | None:
        values = [g for nid, g in groups.items() if role[nid] == which and g]
        return statistics.mean(values) if values else None

    frames = marks["repl1"][0] - marks["repl0"][0]
    entries = marks["repl1"][1] - marks["repl0"][1]
    latencies = sorted(result["latencies"])
    return {
        "system": side.name, "puts_per_s": ops / args.duration, "errors": result["errors"],
        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
        "node_us_per_put": per_put(node_ids),
        "primary_us_per_put": per_put([n for n in node_ids if role[n] == "primary"]),
        "replica_us_per_put": per_put([n for n in node_ids if role[n] == "replica"]),
        "coordinator_cores": sum(used[k] for k in used if k.startswith("c")) / wall,
        "node_cores": sum(used[n] for n in node_ids) / wall,
        "node_sys_share": used["sys"] / sum(used[n] for n in node_ids)
        if sum(used[n] for n in node_ids) else None,
        "client_us_per_put": result["cpu_seconds"] * 1e6 / ops if ops else None,
        "client_cores": result["cpu_seconds"] / args.duration,
        "primary_group": mean_group("primary"), "replica_group": mean_group("replica"),
        "entries_per_frame": entries / frames if frames else None,
        "per_node_cores": {n: used[n] / wall for n in node_ids},
        "idle_node_cores": sum(v for k, v in idle.items() if k.startswith("n")) if idle else None,
        "idle_coordinator_cores": sum(v for k, v in idle.items() if k.startswith("c"))
        if idle else None,
        "gc_node_us_per_put": sum(v[0] for k, v in gc_used.items() if k.startswith("n"))
        * 1e6 / ops if gc_used and ops else None,
        "gc_longest_full_ms": max((v[1] for v in gc_used.values()), default=0) * 1e3
        if gc_used else None,
        "roles": role, "load": os.getloadavg()[0],
    }


def measure_etcd(work: Path, binary: str, args: argparse.Namespace) -> dict[str, Any]:
    with preloaded_etcd(work, binary) as etcd:
        result = run_load(LoadSpec(etcd.target, "put", args.concurrency, args.duration,
                                   args.warmup, etcd.shape, 1),
                          server_pid=etcd.pids, seed=args.concurrency)
    return {"system": "etcd", "puts_per_s": result.requests_per_s, "errors": result.errors,
            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "node_us_per_put": (result.server_cpu_cores or 0) * 1e6 / result.requests_per_s
            if result.requests_per_s else None,
            "client_cores": result.generator_cpu_cores, "load": os.getloadavg()[0]}


def _median_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} ({min(values):.3g}..{max(values):.3g})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_put_ab", description=__doc__)
    p.add_argument("--b-python", help="the B side's interpreter (another checkout's venv)")
    p.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of side A's processes (repeatable)")
    p.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of side B's processes; with no --b-python, B is this "
                        "checkout with that environment")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-etcd", action="store_true")
    p.add_argument("--idle", type=float, default=3.0,
                   help="seconds of no load before the puts, to measure the background CPU")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy raw profiles (200 Hz) of a primary and a replica")
    p.add_argument("--profile-side", default="A", help="the side profiled (A or B)")
    p.add_argument("--profile-native", action="store_true",
                   help="py-spy --native: C frames too (the collector, msgpack, syscalls)")
    p.add_argument("--gc-probe", action="store_true",
                   help="time the garbage collector in every node (bench/gc_probe)")
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    def env(pairs: list[str]) -> tuple[tuple[str, str], ...]:
        return tuple(tuple(pair.split("=", 1)) for pair in pairs)  # type: ignore[misc]

    sides: list[Side | None] = [Side("A", sys.executable, env(args.a_env))]
    if args.b_python or args.b_env:
        sides.append(Side("B", args.b_python or sys.executable, env(args.b_env)))
    binary = None if args.no_etcd else etcd_binary()
    if binary is not None:
        sides.append(None)  # etcd
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="clusterput-ab-") as tmp:
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            rows = []
            for side in order:
                work = Path(tmp) / f"round{r + 1}-{side.name if side else 'etcd'}"
                if side is None:
                    assert binary is not None
                    row = measure_etcd(work, binary, args)
                else:
                    profile = args.profile if side.name == args.profile_side else None
                    row = measure_shardkv(side, work, args, profile)
                row["round"] = r + 1
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items()
                                  if k not in ("per_node_cores", "roles")}), flush=True)
            rounds.append(rows)
    by = [{row["system"]: row for row in rows} for rows in rounds]
    print(f"\nmedians (range) of {args.rounds} rounds, c={args.concurrency}, "
          f"{args.duration:.0f} s windows")
    fields = ("puts_per_s", "p50_ms", "node_us_per_put", "node_sys_share", "primary_us_per_put",
              "replica_us_per_put", "client_us_per_put", "coordinator_cores", "node_cores",
              "client_cores", "idle_node_cores", "idle_coordinator_cores",
              "gc_node_us_per_put", "gc_longest_full_ms", "primary_group",
              "replica_group", "entries_per_frame", "load")
    names = [s.name if s else "etcd" for s in sides]
    print(f"{'':22}" + "".join(f"{n:>26}" for n in names))
    for field in fields:
        cells = []
        for n in names:
            values = [b[n][field] for b in by if n in b and b[n].get(field) is not None]
            cells.append(_median_range(values))
        print(f"{field:22}" + "".join(f"{c:>26}" for c in cells))
    summary: dict[str, str] = {}
    for n in names:
        if n != "etcd" and "etcd" in names:
            summary[f"{n}/etcd puts"] = _median_range(
                [b[n]["puts_per_s"] / b["etcd"]["puts_per_s"] for b in by])
    if "B" in names:
        for field in ("node_us_per_put", "primary_us_per_put", "replica_us_per_put",
                      "client_us_per_put", "puts_per_s"):
            summary[f"A/B {field}"] = _median_range(
                [b["A"][field] / b["B"][field] for b in by if b["A"][field] and b["B"][field]])
    print()
    for name, value in summary.items():
        print(f"{name:28} {value}")
    if args.json:
        args.json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                         "rounds": rounds, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

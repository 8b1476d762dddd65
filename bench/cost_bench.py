"""Per-request cost (issue 17): node CPU microseconds per operation, A/B in alternating rounds.

    python -m bench.cost_bench                         # A only, with etcd, 3 rounds (~6 min)
    python -m bench.cost_bench --ab uvloop             # uvloop (A) vs asyncio's loop (B)
    python -m bench.cost_bench --ab lean               # the lean REST lane on (A) vs off (B)
    python -m bench.cost_bench --b-python ../base/.venv/bin/python   # this code vs another
    python -m bench.cost_bench --quick                 # a smoke run (~1 min)
    python -m bench.cost_bench --recovery-keys 1000000 # plus bytes/key and recovery time
    python -m bench.cost_bench --topologies '' --recovery-keys 1000000 --b-python ...

For every system and path it reports what one request costs the server: CPU seconds of the
server's processes over the measured window (``/proc/<pid>/stat``), divided by the requests
served in it (``srv us/op``; for a replicated shard, the primary's and replicas' together,
with the primary's own share in ``primary us/op``), next to what it cost the load generator
(``gen us/op``), the throughput and latency. The paths: ``rpc`` (bench/loadgen.py's pipelined
``/v1/rpc``, one WebSocket per generator process), ``rest`` (wrk, keep-alive HTTP/1.1; the
Python generator when wrk is missing), and etcd's HTTP/JSON gateway with the same two
generators. Topologies: ``single`` (one node; one etcd member) and ``replicated`` (a shard of
a primary and two replicas, writes acknowledged by a majority; a 3-member etcd).

A shared machine drifts, so every round starts every system afresh in an order that rotates
from round to round (A B etcd, then B etcd A, ...), and the figures are medians over rounds
with their spread (min..max); A/B ratios are the median of per-round ratios. The machine's
load average is recorded with every cell. CPU per request moves much less with the load than
throughput does: it is the figure to judge a change by.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cost_systems import (
    Running,
    Variant,
    etcd_single,
    etcd_three,
    shardkv_replicated,
    shardkv_single,
)
from bench.etcd_reference import etcd_binary
from bench.kv_protocol import Target
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.node_bench import _preload
from bench.workloads import Shape, value_of
from bench.wrk_generator import run_wrk, wrk_binary

AB_PRESETS = {"uvloop": ({"SHARDKV_UVLOOP": "1"}, {"SHARDKV_UVLOOP": "0"}),
              # the node's lean REST lane (node/api/lean_lane.py) on vs off
              "lean": ({"SHARDKV_LEAN_REST": "1"}, {"SHARDKV_LEAN_REST": "0"}),
              # small WAL groups written from the loop while syncs are fast (A) vs every
              # group on the WAL's writer thread (B): node/wal/group_placement.py
              "wal-in-loop": ({"SHARDKV_WAL_IN_LOOP": "1"}, {"SHARDKV_WAL_IN_LOOP": "0"}),
              # groups to the WAL's thread when a core is idle (group_placement.py) vs never
              "wal-overlap": ({"SHARDKV_WAL_IN_LOOP": "auto"}, {"SHARDKV_WAL_IN_LOOP": "1"}),
              # the node's young-generation GC threshold (node/gc_thresholds.py) vs Python's
              "gc-gen0": ({"SHARDKV_GC_GEN0": "10000"}, {"SHARDKV_GC_GEN0": "0"})}
SHARDKV_PATHS = (("rpc", "get"), ("rpc", "put"), ("rest", "get"), ("rest", "put"))
ETCD_PATHS = (("etcd", "get"), ("etcd", "put"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cost_bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--topologies", default="single,replicated",
                   help="single, replicated, or '' (only --recovery-keys)")
    p.add_argument("--paths", default="rpc-get,rpc-put,rest-get,rest-put",
                   help="shardkv paths measured (etcd: get and put)")
    p.add_argument("--fsync", default="always")
    p.add_argument("--ab", choices=sorted(AB_PRESETS), help="compare A/B of a preset switch")
    p.add_argument("--b-python", help="B runs this interpreter (another checkout's venv)")
    p.add_argument("--no-etcd", action="store_true")
    p.add_argument("--key-space", type=int, default=10_000)
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--recovery-keys", type=int, default=0,
                   help="also measure memory per key and recovery of this many keys")
    p.add_argument("--recovery-wal-entries", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="1 round, 1 s cells, 1000 keys")
    p.add_argument("--json", dest="json_path")
    return p


def variants_of(args: argparse.Namespace) -> list[Variant]:
    if args.ab:
        a_env, b_env = AB_PRESETS[args.ab]
        return [Variant(f"A:{args.ab}=on", a_env), Variant(f"B:{args.ab}=off", b_env)]
    if args.b_python:
        return [Variant("A:this"), Variant("B:" + Path(args.b_python).parents[2].name, {},
                                            args.b_python)]
    return [Variant("this")]


Starter = Callable[[Path], contextlib.AbstractContextManager[Running]]


def _systems(args: argparse.Namespace, topology: str) -> list[tuple[str, str, Starter]]:
    """(system, variant, start) for one topology, in the order of round 0."""
    out: list[tuple[str, str, Starter]] = []
    start_shardkv = shardkv_single if topology == "single" else shardkv_replicated
    for variant in variants_of(args):
        out.append(("shardkv", variant.name,
                    lambda w, v=variant: start_shardkv(w, v, args.fsync)))
    binary = etcd_binary()
    if not args.no_etcd and binary is not None:
        if topology == "single":
            out.append(("etcd", "1 member", etcd_single))
        else:
            out.append(("etcd", "3 members", lambda w: etcd_three(w, binary)))
    return out


def _cells(system: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    if system == "etcd":
        return list(ETCD_PATHS)
    wanted = {tuple(p.split("-")) for p in args.paths.split(",")}
    return [path for path in SHARDKV_PATHS if path in wanted]


def _measure(args: argparse.Namespace, running: Running, target: Target, workload: str,
             shape: Shape, seed: int) -> list[tuple[str, LoadResult, dict[int, float]]]:
    """One cell with the Python generator (rpc and etcd) and wrk (REST and etcd), each with
    the CPU every server pid used across it (for the primary's share)."""
    spec = LoadSpec(target=target, workload=workload, concurrency=args.concurrency,
                    duration_s=args.duration, warmup_s=args.warmup, shape=shape)
    runs: list[tuple[str, Callable[[], LoadResult]]] = []
    use_wrk = wrk_binary() is not None
    if target.kind in ("rpc", "etcd") or not use_wrk:
        runs.append(("python", lambda: run_load(spec, server_pid=running.pids, seed=seed)))
    if target.kind in ("rest", "etcd") and use_wrk:
        runs.append(("wrk", lambda: run_wrk(spec, value_of(shape), server_pid=running.pids)))
    out = []
    for generator, run in runs:
        before = running.cpu_by_pid()
        result = run()
        after = running.cpu_by_pid()
        out.append((generator, result, {p: after[p] - before[p] for p in running.pids}))
    return out


def _record(round_no: int, system: str, variant: str, topology: str, generator: str,
            result: LoadResult, cpu: dict[int, float], primary: int) -> dict[str, Any]:
    rps = result.requests_per_s or 0.0
    srv = None if result.server_cpu_cores is None or not rps else \
        result.server_cpu_cores * 1e6 / rps
    total = sum(cpu.values())
    share = cpu[primary] / total if total > 0 else None
    return {
        "round": round_no, "system": system, "variant": variant, "topology": topology,
        "path": result.kind.split("/")[0], "workload": result.workload, "generator": generator,
        "requests_per_s": rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "errors": result.errors, "server_cpu_cores": result.server_cpu_cores,
        "server_us_per_op": srv,
        "primary_us_per_op": None if srv is None or share is None else srv * share,
        "generator_us_per_op": result.generator_cpu_cores * 1e6 / rps if rps else None,
        "generator_cpu_cores": result.generator_cpu_cores,
        "load_avg_1m": os.getloadavg()[0],
    }


def run_rounds(args: argparse.Namespace, work: Path, log: Callable[[str], None]
               ) -> list[dict[str, Any]]:
    shape = Shape(key_space=args.key_space, value_size=args.value_size)
    records: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        for topology in [t for t in args.topologies.split(",") if t]:
            systems = _systems(args, topology)
            shift = round_no % len(systems)
            for system, variant, start in systems[shift:] + systems[:shift]:
                where = work / f"r{round_no}-{topology}-{system}-{variant}".replace(":", "_")
                where.mkdir(parents=True, exist_ok=True)
                with start(where) as running:
                    kind_of = {"rpc": "rpc", "rest": "rest", "etcd": "etcd"}
                    targets = {k: Target(kind_of[k], running.url, system, variant)
                               for k in {path for path, _ in _cells(system, args)}}
                    _preload(next(iter(targets.values())), shape)
                    for path, workload in _cells(system, args):
                        for generator, result, cpu in _measure(
                                args, running, targets[path], workload, shape, round_no):
                            row = _record(round_no, system, variant, topology, generator,
                                          result, cpu, running.pids[0])
                            row["event_loop"] = running.detail.get("event_loop")
                            records.append(row)
                            log(_line(row))
    return records


def _line(r: dict[str, Any]) -> str:
    def f(v: float | None, d: int = 0) -> str:
        return "-" if v is None else f"{v:,.{d}f}"
    return (f"round {r['round'] + 1} {r['topology']:<10} {r['system']:<7} {r['variant']:<16} "
            f"{r['path']}/{r['generator']:<6} {r['workload']:<3} {f(r['requests_per_s']):>8}/s "
            f"p50 {f(r['p50_ms'], 2)} ms  srv {f(r['server_us_per_op'], 1)} us/op  "
            f"primary {f(r['primary_us_per_op'], 1)}  gen {f(r['generator_us_per_op'], 1)}  "
            f"load {r['load_avg_1m']:.1f}")


FIELDS = ("requests_per_s", "p50_ms", "p99_ms", "server_us_per_op", "primary_us_per_op",
          "generator_us_per_op", "load_avg_1m")
Key = tuple[str, str, str, str, str, str]


def _key(r: dict[str, Any]) -> Key:
    return (r["topology"], r["system"], r["variant"], r["path"], r["generator"], r["workload"])


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians with their spread, per cell."""
    grouped: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        grouped[_key(r)].append(r)
    rows = []
    for key, runs in grouped.items():
        row: dict[str, Any] = dict(zip(("topology", "system", "variant", "path", "generator",
                                        "workload"), key, strict=True))
        row["rounds"] = len(runs)
        row["errors"] = sum(r["errors"] for r in runs)
        for name in FIELDS:
            values = [r[name] for r in runs if r[name] is not None]
            row[name] = statistics.median(values) if values else None
            row[name + "_range"] = [min(values), max(values)] if values else None
        rows.append(row)
    return rows


def paired_ratios(records: list[dict[str, Any]], a: str, b: str, field_name: str
                  ) -> dict[str, dict[str, float]]:
    """Median over rounds of (A's figure / B's figure), per cell, with its spread."""
    by_round: dict[tuple[Any, ...], dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["system"] == "shardkv" and r[field_name]:
            cell = (r["topology"], r["path"], r["generator"], r["workload"], r["round"])
            by_round[cell][r["variant"]] = r[field_name]
    ratios: dict[str, list[float]] = defaultdict(list)
    for (topology, path, generator, workload, _), pair in by_round.items():
        if a in pair and b in pair:
            ratios[f"{topology} {path}/{generator} {workload}"].append(pair[a] / pair[b])
    return {cell: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for cell, v in ratios.items()}


def versus_etcd(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shardkv's throughput over etcd's, same topology, workload and generator: REST and
    the gateway under wrk; rpc and the gateway under the Python generator."""
    etcd = {(r["topology"], r["generator"], r["workload"]): r for r in rows
            if r["system"] == "etcd"}
    out = []
    for r in rows:
        ref = etcd.get((r["topology"], r["generator"], r["workload"]))
        if r["system"] != "shardkv" or ref is None or not ref["requests_per_s"]:
            continue
        out.append({"topology": r["topology"], "variant": r["variant"], "path": r["path"],
                    "generator": r["generator"], "workload": r["workload"],
                    "ratio": r["requests_per_s"] / ref["requests_per_s"],
                    "cpu_ratio": (r["server_us_per_op"] / ref["server_us_per_op"]
                                  if r["server_us_per_op"] and ref["server_us_per_op"]
                                  else None)})
    return out


def memory_and_recovery(args: argparse.Namespace, log: Callable[[str], None]
                        ) -> list[dict[str, Any]]:
    """bench/recovery_bench.py per variant in its own process (a clean RSS), rounds
    alternated like the rest."""
    out = []
    variants = variants_of(args)
    script = Path(__file__).resolve().parent / "recovery_bench.py"
    for round_no in range(args.rounds):
        order = variants if round_no % 2 == 0 else variants[::-1]
        for variant in order:
            argv = [variant.python, str(script), "--keys", str(args.recovery_keys),
                    "--wal-entries", str(args.recovery_wal_entries)]
            done = subprocess.run(argv, capture_output=True, text=True, check=True,
                                  env={**os.environ, **variant.env})
            result = json.loads(done.stdout.strip().splitlines()[-1])
            mem, rec = result.get("memory", {}), result["recovery"]
            log(f"round {round_no + 1} {variant.name}: {mem.get('bytes_per_key', 0):.0f} "
                f"bytes/key, recovery {rec['recovery_seconds']} s "
                f"({rec.get('recovery_cpu_seconds')} CPU s)")
            out.append({"round": round_no, "variant": variant.name,
                        "bytes_per_key": mem.get("bytes_per_key"),
                        "recovery_seconds": rec["recovery_seconds"],
                        "recovery_cpu_seconds": rec.get("recovery_cpu_seconds"), "raw": result})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: float | None, d: int = 0) -> str:
        return "-" if v is None else f"{v:,.{d}f}"

    def spread(r: dict[str, Any], name: str, d: int) -> str:
        span = r[name + "_range"]
        return f"{f(r[name], d)} ({f(span[0], d)}..{f(span[1], d)})" if span else "-"
    head = (f"{'topology':<10} {'system':<7} {'variant':<16} {'path':<11} {'op':<3} "
            f"{'req/s (range)':>24} {'srv us/op (range)':>24} {'primary us/op':>13} "
            f"{'gen us/op':>9} {'p50 ms':>7} {'load':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['topology']:<10} {r['system']:<7} {r['variant']:<16} "
            f"{r['path'] + '/' + r['generator']:<11} {r['workload']:<3} "
            f"{spread(r, 'requests_per_s', 0):>24} {spread(r, 'server_us_per_op', 1):>24} "
            f"{f(r['primary_us_per_op'], 1):>13} {f(r['generator_us_per_op'], 1):>9} "
            f"{f(r['p50_ms'], 2):>7} {f(r['load_avg_1m'], 1):>5}")
    return "\n".join(lines)


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="shardkv-cost-") as temp:
        yield Path(temp)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.key_space = 1, 1.0, 0.3, 1000

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    with _work_dir() as work:
        records = run_rounds(args, work, log)
    rows = summarize(records)
    variants = [v.name for v in variants_of(args)]
    document: dict[str, Any] = {
        "benchmark": "per-request cost (issue 17)",
        "command": " ".join(["python", "-m", "bench.cost_bench", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(), "elapsed_s": round(time.monotonic() - started, 1),
        "settings": {k: v for k, v in vars(args).items() if k != "json_path"},
        "medians": rows, "vs_etcd": versus_etcd(rows), "records": records,
    }
    if len(variants) == 2:
        a, b = variants
        document["a_over_b"] = {
            "server_us_per_op": paired_ratios(records, a, b, "server_us_per_op"),
            "requests_per_s": paired_ratios(records, a, b, "requests_per_s"),
        }
    if args.recovery_keys:
        document["memory_and_recovery"] = memory_and_recovery(args, log)
    print(table(rows))
    for variant in variants:
        mine = [r for r in document.get("memory_and_recovery", []) if r["variant"] == variant]
        for name in ("bytes_per_key", "recovery_seconds", "recovery_cpu_seconds"):
            values = [r[name] for r in mine if r[name] is not None]
            if values:
                print(f"{variant}: {name} median {statistics.median(values):.2f} "
                      f"({min(values):.2f}..{max(values):.2f}) over {len(values)} rounds")
    for v in document["vs_etcd"]:
        print(f"vs etcd: {v['topology']} {v['variant']} {v['path']}/{v['generator']} "
              f"{v['workload']}: {v['ratio']:.2f}x throughput"
              + (f", {v['cpu_ratio']:.2f}x server CPU per op" if v["cpu_ratio"] else ""))
    for name, cells in document.get("a_over_b", {}).items():
        for cell, ratio in cells.items():
            print(f"A/B {name} {cell}: {ratio['median']:.3f} "
                  f"({ratio['min']:.3f}..{ratio['max']:.3f})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(r["errors"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())

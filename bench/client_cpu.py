"""The client library's own CPU per request: A/B of ``shardkv.client.Client`` alone.

    python -m bench.client_cpu --b-python /work/main/.venv/bin/python --rounds 5
    python -m bench.client_cpu --rounds 1 --profile prof/   # py-spy of A's load process

Every other benchmark reports the client's CPU next to the servers'; this one is about the
client only. One small cluster serves the whole run (``--shards`` shards of one member, one
coordinator, memory engine, ``fsync never``: the servers as cheap as they get, so they leave
the client as much of the two cores as possible), run by ``--server-python`` (by default the
B side's interpreter: both clients talk to the same, unchanged servers). Then, round by
round, A's and B's load processes (``client_load.py`` by path under each side's interpreter,
so the harness is the same file and only the installed library differs) put and get
100-byte values at each concurrency, A and B in an order that alternates. A load process
reads its own CPU (``getrusage``, user + system) over exactly its measured window; the figure
is that CPU divided by the requests completed in the window, in microseconds. Throughput is
printed too, for scale only: on a shared machine it is mostly the other tenants.

The routed path is the real one: the client fetches the map from the coordinator, hashes
every key on the ring, stamps every write with its session, and keeps one pipelined
connection per node.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shardkv.cluster.launcher import LocalCluster

from bench.cost_systems import _Plan
from bench.profiler import profiled

LOAD_SCRIPT = Path(__file__).resolve().parent / "client_load.py"
REPO = LOAD_SCRIPT.parent.parent


@contextlib.contextmanager
def serving_cluster(work: Path, python: str, shards: int) -> Iterator[list[str]]:
    """A running cluster of ``shards`` one-member shards; yields the coordinator URLs."""
    plan = _Plan.new(work, shards=shards, replicas=1, coordinators=1, engine="memory",
                     fsync="never")
    plan.python = python
    cluster = LocalCluster(work, plan)
    cluster.start()
    try:
        cluster.wait_ready(120)
        yield plan.coordinator_urls()
    finally:
        cluster.stop()


def run_load(python: str, coordinators: list[str], workload: str, in_flight: int,
             duration: float, warmup: float, profile: Path | None = None,
             native: bool = False) -> dict[str, Any]:
    """One ``client_load.py`` run under ``python``; its JSON result (with ``us_per_op``)."""
    argv = [python, str(LOAD_SCRIPT), "--coordinators", ",".join(coordinators),
            "--workload", workload, "--in-flight", str(in_flight),
            "--duration", str(duration), "--warmup", str(warmup), "--no-latencies"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    spy: contextlib.AbstractContextManager[Any] | None = None
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            result = json.loads(line)
        elif line == "window-start" and profile is not None:
            spy = profiled(proc.pid, profile, duration, rate=200, fmt="raw", native=native)
            spy.__enter__()
    if spy is not None:  # ended after the process: py-spy must not hold up its output
        spy.__exit__(None, None, None)
    if proc.wait() != 0 or not result:
        raise RuntimeError(f"the load process failed ({proc.returncode}): {' '.join(argv)}")
    if workload == "preload":
        return result
    ops = result["ops"]
    return {"ops": ops, "errors": result["errors"], "ops_per_s": ops / duration,
            "us_per_op": result["cpu_seconds"] / ops * 1e6 if ops else None,
            "sys_share": result["system_seconds"] / (result["cpu_seconds"] or 1)}


def _median_range(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}..{max(values):.{digits}f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client_cpu",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--b-python", help="the B side's interpreter (another checkout's venv)")
    p.add_argument("--server-python",
                   help="the servers' interpreter (default: --b-python, else this one)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--workloads", nargs="+", default=["put", "get"], choices=("put", "get"))
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy raw profiles (200 Hz) of A's load process, one per cell")
    p.add_argument("--profile-native", action="store_true",
                   help="py-spy --native: C frames too (msgpack, hashing, syscalls)")
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    sides = {"A": sys.executable}
    if args.b_python:
        sides["B"] = args.b_python
    server_python = args.server_python or args.b_python or sys.executable
    cells = [(w, c) for w in args.workloads for c in args.concurrency]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="client-cpu-") as tmp, \
            serving_cluster(Path(tmp), server_python, args.shards) as coordinators:
        run_load(server_python, coordinators, "preload", 1, 0, 0)
        for r in range(args.rounds):
            names = list(sides)
            order = names if r % 2 == 0 else names[::-1]
            for workload, conc in cells:
                for name in order:
                    profile = None
                    if args.profile is not None and name == "A":
                        profile = args.profile / f"client-{workload}-c{conc}-round{r + 1}.txt"
                    row = run_load(sides[name], coordinators, workload, conc, args.duration,
                                   args.warmup, profile, args.profile_native)
                    row.update(side=name, workload=workload, concurrency=conc, round=r + 1,
                               load=os.getloadavg()[0])
                    runs.append(row)
                    print(json.dumps(row), flush=True)
    loads = [row["load"] for row in runs]
    print(f"\nclient CPU us/op, medians (range) of {args.rounds} rounds, "
          f"{args.duration:.0f} s windows, load {min(loads):.1f} to {max(loads):.1f}")
    header = f"{'cell':12}" + "".join(f"{n + ' us/op':>24}" for n in sides)
    if "B" in sides:
        header += f"{'A/B':>24}" + f"{'A ops/s':>12}{'B ops/s':>12}"
    print(header)
    summary: dict[str, dict[str, Any]] = {}
    for workload, conc in cells:
        mine = [row for row in runs if row["workload"] == workload
                and row["concurrency"] == conc]
        per_side = {n: [row["us_per_op"] for row in mine if row["side"] == n
                        and row["us_per_op"]] for n in sides}
        line = f"{workload + ' c=' + str(conc):12}" + "".join(
            f"{_median_range(per_side[n]):>24}" for n in sides)
        cell: dict[str, Any] = {n: per_side[n] for n in sides}
        if "B" in sides:
            ratios = [a / b for a, b in zip(per_side["A"], per_side["B"], strict=False)]
            rates = {n: statistics.median(row["ops_per_s"] for row in mine if row["side"] == n)
                     for n in sides}
            line += f"{_median_range(ratios, 2):>24}"
            line += f"{rates['A']:>12.0f}{rates['B']:>12.0f}"
            cell["A/B"] = ratios
        summary[f"{workload} c={conc}"] = cell
        print(line)
    if args.json:
        config = {k: str(v) for k, v in vars(args).items()}
        report = {"config": config, "runs": runs, "summary": summary}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

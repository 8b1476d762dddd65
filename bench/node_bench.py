"""The storage node benchmark (issue 2): shardkv's node against a single etcd member.

    python -m bench.node_bench                      # the whole matrix, one run
    python -m bench.node_bench --runs 3 --json out.json
    python -m bench.node_bench --quick              # a short smoke run

Each run starts fresh servers in a temporary directory (etcd; a shardkv node with
``--fsync always``; one with ``--fsync never``), preloads the key space into each, and runs
every (workload, concurrency, path) cell for ``--duration`` seconds with the multi-process load
generator of ``bench.loadgen`` (and wrk with ``--wrk``), each cell on every system back to
back. It prints a table of medians over ``--runs`` runs, the shardkv/etcd ratios, the
batch/single ratios and the issue's targets, and writes the same (and every run) as JSON.
Every run stops by itself; servers are stopped on any exit.

bench/README.md says what each workload is and how to read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/node_bench.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.etcd_reference import etcd_binary, etcd_member, etcd_version
from bench.kv_protocol import Target
from bench.loadgen import LoadError, LoadResult, LoadSpec, run_load
from bench.profiler import profiled, py_spy_binary
from bench.report import batch_ratios, etcd_ratios, medians, summary, table, target_checks
from bench.server_metrics import scrape, summarize
from bench.server_process import ServerProcess
from bench.shardkv_node import shardkv_node
from bench.workloads import WORKLOADS, Shape, preload, value_of
from bench.wrk_generator import run_wrk, wrk_binary
from bench.wrk_generator import supports as wrk_supports

WORKLOAD_ORDER = ("get", "mix", "put", "batch")  # reads first, on the freshly preloaded data


@dataclass(frozen=True, slots=True)
class System:
    """A server configuration to measure: how to start it, and the paths to load it by."""

    system: str
    variant: str
    kinds: tuple[str, ...]
    start: Callable[[Path], ServerProcess] | None  # None: an external server, already running
    external_url: str | None = None
    external_pid: int | None = None


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.node_bench",
        description="Benchmark a shardkv node (rpc and REST, fsync always/never) against etcd.",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of the matrix (medians)")
    parser.add_argument("--duration", type=float, help="seconds measured per cell (3)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (0.5)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_ORDER), help="get,mix,put,batch")
    parser.add_argument("--concurrency", help="requests in flight, e.g. 1,16,64 (default)")
    parser.add_argument("--transports", default="rpc,rest", help="shardkv paths: rpc,rest")
    parser.add_argument("--fsync", default="always,never", help="shardkv fsync policies")
    parser.add_argument("--no-etcd", action="store_true", help="do not run the etcd reference")
    parser.add_argument(
        "--require-etcd", action="store_true", help="fail (instead of skipping) without etcd"
    )
    parser.add_argument(
        "--wrk",
        action="store_true",
        help="also load REST and etcd with wrk (get, put, mix): a lighter generator",
    )
    parser.add_argument("--value-size", type=int, default=256, help="bytes per value")
    parser.add_argument("--key-space", type=int, help="distinct keys (10000)")
    parser.add_argument("--batch-size", type=int, default=100, help="puts per batch")
    parser.add_argument(
        "--processes", type=int, default=0, help="generator processes (0: one per core)"
    )
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra argument for `shardkv node` (repeatable), e.g. --node-arg=--engine=sqlite",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a py-spy flame graph of the node per shardkv cell into DIR (needs py-spy)",
    )
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "raw"),
        default="flamegraph",
        help="raw: collapsed stacks (.txt), for `python -m bench.profile_summary`",
    )
    parser.add_argument("--target", help="bench this running node (URL) instead of starting one")
    parser.add_argument("--target-pid", type=int, help="pid of --target, for its CPU use")
    parser.add_argument("--work-dir", help="where servers keep data and logs (a temp dir)")
    parser.add_argument("--json", dest="json_path", help="write the JSON here ('-': stdout)")
    return parser


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    args.duration = args.duration or (0.5 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if quick else 0.5)
    args.concurrency = [int(c) for c in _csv(args.concurrency or ("1,16" if quick else "1,16,64"))]
    args.key_space = args.key_space or (1000 if quick else 10_000)
    requested = _csv(args.workloads)
    unknown = set(requested) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    args.workloads = [w for w in WORKLOAD_ORDER if w in requested]
    args.transports = _csv(args.transports)
    args.fsync = _csv(args.fsync)
    if not set(args.transports) <= {"rpc", "rest"}:
        raise SystemExit("--transports takes rpc and/or rest")
    if args.runs < 1 or min(args.concurrency) < 1:
        raise SystemExit("--runs and --concurrency must be >= 1")
    if args.profile and py_spy_binary() is None:
        raise SystemExit("--profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    if args.wrk and wrk_binary() is None:
        raise SystemExit("--wrk: wrk is not installed (scripts/install-reference-systems.sh)")
    if args.batch_size > args.key_space:
        raise SystemExit("--batch-size must not exceed --key-space")
    return args


def plan_systems(args: argparse.Namespace, notes: list[str]) -> list[System]:
    systems: list[System] = []
    wants_etcd = not args.no_etcd and any(w in args.workloads for w in WORKLOADS)
    if wants_etcd:
        binary = etcd_binary()
        if binary is None:
            message = "etcd not installed (scripts/install-reference-systems.sh): skipped"
            if args.require_etcd:
                raise SystemExit(message)
            notes.append(message)
        else:
            version = etcd_version(binary)
            systems.append(
                System("etcd", version, ("etcd",), lambda d: etcd_member(d, binary=binary))
            )
    if args.target:
        systems.append(
            System(
                "shardkv",
                "external",
                tuple(args.transports),
                None,
                external_url=args.target.rstrip("/"),
                external_pid=args.target_pid,
            )
        )
        return systems
    for policy in args.fsync:
        systems.append(
            System(
                "shardkv",
                f"fsync={policy}",
                tuple(args.transports),
                lambda d, policy=policy: shardkv_node(d, fsync=policy, extra_args=args.node_arg),
            )
        )
    return systems


@contextmanager
def _running(system: System, work_dir: Path) -> Iterator[tuple[str, int | None]]:
    """The system's URL and pid while it runs (a fresh server, stopped afterwards)."""
    if system.start is None:
        assert system.external_url is not None
        yield system.external_url, system.external_pid
        return
    server = system.start(work_dir)
    server.start()
    try:
        yield server.url, server.pid
    finally:
        server.stop()


def _preload(target: Target, shape: Shape) -> None:
    async def load() -> None:
        client = await target.connect(8)
        try:
            await preload(client, shape)
        finally:
            await client.close()

    asyncio.run(load())


def run_matrix(
    args: argparse.Namespace,
    systems: list[System],
    work_dir: Path,
    log: Callable[[str], None],
    notes: list[str],
) -> list[LoadResult]:
    """Every run starts fresh servers for all systems at once and then goes cell by cell,
    each cell measured on every system back to back: when the machine's load drifts (other
    work on a shared host), it drifts for all systems alike and the ratios stay fair. The
    servers waiting for their turn are idle."""
    shape = Shape(key_space=args.key_space, value_size=args.value_size, batch_size=args.batch_size)
    results: list[LoadResult] = []
    for run in range(args.runs):
        with ExitStack() as running:
            live: list[tuple[System, list[Target], int | None]] = []
            for system in systems:
                url, pid = running.enter_context(_running(system, work_dir / f"run{run + 1}"))
                targets = [
                    Target(kind, url, system.system, system.variant) for kind in system.kinds
                ]
                if any(WORKLOADS[w].needs_preload for w in args.workloads):
                    _preload(targets[0], shape)
                live.append((system, targets, pid))
            for workload in args.workloads:
                for concurrency in args.concurrency:
                    for system, targets, pid in live:
                        for target in targets:
                            spec = LoadSpec(
                                target=target,
                                workload=workload,
                                concurrency=concurrency,
                                duration_s=args.duration,
                                warmup_s=args.warmup,
                                shape=shape,
                                processes=args.processes,
                            )
                            for result in _run_cell(args, spec, pid, run, notes, log):
                                results.append(result)
                                log(
                                    f"run {run + 1}/{args.runs} {system.system} "
                                    f"{system.variant} {result.kind} {workload} "
                                    f"c={concurrency}: {result.requests_per_s:,.0f} req/s "
                                    f"p99 {result.p99_ms:.2f} ms errors {result.errors}"
                                )
    return results


def _run_cell(
    args: argparse.Namespace,
    spec: LoadSpec,
    pid: int | None,
    run: int,
    notes: list[str],
    log: Callable[[str], None],
) -> list[LoadResult]:
    """One cell with the Python generator, and with wrk too when asked and possible. A cell
    that cannot run is noted (and makes the exit status 1), the others go on."""
    cell: list[LoadResult] = []
    url = spec.target.url
    try:
        before = scrape(url)
        with ExitStack() as profile:
            if args.profile and pid is not None and spec.target.system == "shardkv":
                suffix = ".svg" if args.profile_format == "flamegraph" else ".txt"
                name = (
                    f"{spec.target.variant}-{spec.target.kind}-{spec.workload}"
                    f"-c{spec.concurrency}-run{run + 1}{suffix}"
                ).replace("=", "-")
                problems = profile.enter_context(
                    profiled(pid, Path(args.profile) / name, spec.warmup_s + spec.duration_s,
                             fmt=args.profile_format)
                )
                profile.callback(lambda: notes.extend(problems))
            result = run_load(spec, server_pid=pid, seed=run)
        result.server_metrics = summarize(before, scrape(url))
        cell.append(result)
        if args.wrk and wrk_supports(spec):
            before = scrape(url)
            result = run_wrk(spec, value_of(spec.shape), server_pid=pid)
            result.server_metrics = summarize(before, scrape(url))
            cell.append(result)
    except (LoadError, RuntimeError) as exc:
        target = spec.target
        note = (
            f"{target.system} {target.variant} {target.kind} {spec.workload} "
            f"c={spec.concurrency} did not run: {exc}"
        )
        notes.append(note)
        log(f"error: {note}")
    return cell


def build_document(
    args: argparse.Namespace, results: list[LoadResult], notes: list[str], elapsed_s: float
) -> dict[str, Any]:
    rows = medians(results)
    return {
        "benchmark": "shardkv node vs etcd",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - elapsed_s)),
        "elapsed_s": round(elapsed_s, 1),
        "command": " ".join(["python", "-m", "bench.node_bench", *sys.argv[1:]]),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "runs": args.runs,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "workloads": args.workloads,
            "concurrency": args.concurrency,
            "transports": args.transports,
            "fsync": args.fsync,
            "value_size": args.value_size,
            "key_space": args.key_space,
            "batch_size": args.batch_size,
            "processes": args.processes,
            "wrk": args.wrk,
            "profile_dir": args.profile,
            "node_args": args.node_arg,
        },
        "notes": notes,
        "medians": rows,
        "vs_etcd": etcd_ratios(rows),
        "batch_vs_single": batch_ratios(rows),
        "targets": [check.to_dict() for check in target_checks(rows)],
        "results": [r.to_dict() for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _resolve(build_parser().parse_args(argv))
    to_stdout = args.json_path == "-"
    human = sys.stderr if to_stdout else sys.stdout

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    notes: list[str] = []
    systems = plan_systems(args, notes)
    for note in notes:
        log(f"note: {note}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shardkv-bench-") as temp:
        work_dir = Path(args.work_dir) if args.work_dir else Path(temp)
        results = run_matrix(args, systems, work_dir, log, notes)
    document = build_document(args, results, notes, time.monotonic() - started)
    print(table(document["medians"]), file=human)
    text = summary(document["medians"])
    if text:
        print(text, file=human)
    if args.json_path:
        encoded = json.dumps(document, indent=2)
        if to_stdout:
            print(encoded)
        else:
            Path(args.json_path).write_text(encoded + "\n")
    failed = sum(r.errors for r in results)
    if failed:
        log(f"{failed} requests failed (see error_codes in the JSON)")
    skipped = [note for note in notes if "did not run" in note]
    # A benchmark whose requests failed measured something else than it says: exit 1.
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())

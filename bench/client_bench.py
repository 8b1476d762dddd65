"""End-to-end client throughput: ``shardkv.client.Client`` against a local cluster, with etcd
and redis measured in the same run for scale.

What a user of the library gets, everything included: routing with the cached map, one
pipelined connection per node, majority writes through replication, the WAL's fsync policy.
Workloads: ``get``, ``put`` and ``mget100`` (one ``mget`` of 100 random keys, split by shard
and run concurrently), at a total concurrency of 1, 16 and 64 requests in flight, from one
client process and from several (the concurrency is split between them).

The references, each started fresh in every run after the shardkv cluster has stopped (so
they never compete for the CPU):

- etcd, a three-member cluster (``bench.etcd_cluster``: a majority commit with fsync, as
  shardkv's ``w=majority`` with ``--fsync always``), loaded through its HTTP/JSON gateway at
  its leader by ``bench.loadgen`` with the same concurrency and processes. ``get`` is a
  linearizable range, ``put`` a put, ``mget100`` one txn of 100 ranges: etcd has no
  multi-get of scattered keys, and a txn is its nearest equivalent (``bench.mget_workload``).
- redis (``bench.redis_reference``): ``redis-benchmark`` against ``redis-server`` with
  appendfsync ``always`` and ``everysec``: GET, SET, and an MGET of 100 keys. One process in
  C without replication: the ceiling to read the numbers against, not a peer.

    python -m bench.client_bench                      # one run, ~4 min on 2 cores
    python -m bench.client_bench --runs 3 --json out.json   # medians of 3 runs
    python -m bench.client_bench --quick              # a smoke run
    python -m bench.client_bench --no-etcd --no-redis # shardkv only

Each cell runs ``--duration`` seconds after a short warm-up; the figures are operations per
second and latency percentiles measured by the client (one sample per operation), and the
cores the load generator used over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from shardkv.cluster.launcher import ClusterPlan, LocalCluster, http_get_json
from shardkv.cluster.local_processes import free_port

from bench.client_cells import Cell, medians, percentile, ratios, render, render_ratios
from bench.client_load import KEYSPACE, VALUE, drive
from bench.client_load import preload as preload_keys
from bench.etcd_cluster import etcd_cluster, leader_index, spawn_all, stop_all, wait_etcd
from bench.etcd_reference import EtcdGatewayClient, etcd_binary, etcd_version
from bench.kv_protocol import Target
from bench.loadgen import LoadSpec, run_load
from bench.mget_workload import register as register_mget
from bench.redis_reference import redis_version, run_redis
from bench.workloads import Shape, preload


def _process_main(args: tuple[dict[str, Any], str, int, float, float, int]) -> dict[str, Any]:
    return asyncio.run(drive(*args))


def run_cell(target: dict[str, Any], workload: str, concurrency: int, processes: int,
             duration: float, warmup: float) -> Cell:
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0)
              for i in range(processes)]
    jobs = [(target, workload, share, duration, warmup, 1000 * i + concurrency)
            for i, share in enumerate(shares) if share > 0]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(jobs)) as pool:
        results = pool.map(_process_main, jobs)
    latencies = sorted(x for r in results for x in r["latencies"])
    return Cell("shardkv", workload, concurrency, len(jobs),
                sum(r["ops"] for r in results), sum(r["errors"] for r in results), duration,
                percentile(latencies, 0.5), percentile(latencies, 0.99),
                gen_cpu_cores=sum(r["cpu_seconds"] for r in results) / duration)


async def _preload(target: dict[str, Any]) -> None:
    await preload_keys(target)


class _Standalone:
    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc, self.url = proc, url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_standalone(work: Path, fsync: str) -> _Standalone:
    """One ``shardkv node`` without a coordinator: the client's direct mode."""
    port = free_port()
    log = (work / "standalone.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "shardkv.cluster.cli", "node", "--data-dir",
                             str(work / "standalone"), "--listen", f"127.0.0.1:{port}",
                             "--fsync", fsync], stdout=log, stderr=log)
    node = _Standalone(proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while http_get_json(f"{node.url}/ready")[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"the standalone node did not start; see {work}/standalone.log")
        time.sleep(0.1)
    return node


def _shapes(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(workload, concurrency, processes) of every cell, in the order they are measured."""
    return [(w, c, p) for w in args.workloads for c in args.concurrency for p in args.processes
            if p <= c]


def run_shardkv(args: argparse.Namespace, work: Path) -> list[Cell]:
    if args.standalone:
        node = start_standalone(work, args.fsync)
        target: dict[str, Any] = {"nodes": [node.url]}
        label = f"shardkv fsync={args.fsync} standalone"
        stop = node.stop
    else:
        plan = ClusterPlan.new(work / "cluster", shards=args.shards,
                               replicas=args.replicas, coordinators=3, fsync=args.fsync)
        cluster = LocalCluster(work / "cluster", plan)
        target = {"coordinators": plan.coordinator_urls()}
        label = f"shardkv fsync={args.fsync} {args.shards}x{args.replicas}"
        stop = cluster.stop
    cells = []
    try:
        if not args.standalone:
            cluster.start()
            cluster.wait_ready(120)
        asyncio.run(_preload(target))
        for workload, concurrency, processes in _shapes(args):
            cell = run_cell(target, workload, concurrency, processes, args.duration,
                            args.warmup)
            cell.system = label
            cells.append(cell)
            print(render([cell]).splitlines()[1], flush=True)
    finally:
        stop()
    return cells


async def _preload_etcd(url: str, shape: Shape) -> None:
    async with aiohttp.ClientSession() as session:
        await preload(EtcdGatewayClient(url, session), shape)


@dataclass(frozen=True, slots=True)
class RunningEtcd:
    target: Target  # the leader
    pids: list[int]  # the leader's first
    shape: Shape


@contextlib.contextmanager
def preloaded_etcd(work: Path, binary: str) -> Iterator[RunningEtcd]:
    """A fresh three-member etcd cluster in ``work`` with the key space written, stopped on
    leaving (also used by ``bench/cluster_put_ab.py``)."""
    members = etcd_cluster(work, binary)
    work.mkdir(parents=True, exist_ok=True)
    procs = spawn_all(members)
    try:
        urls = [m.url for m in members]
        asyncio.run(wait_etcd(urls))
        leader = leader_index(urls)
        shape = Shape(key_space=KEYSPACE, value_size=len(VALUE), batch_size=100)
        asyncio.run(_preload_etcd(urls[leader], shape))
        pids = [procs[leader].pid] + [p.pid for i, p in enumerate(procs) if i != leader]
        yield RunningEtcd(Target("etcd", urls[leader], "etcd", "3 members"), pids, shape)
    finally:
        stop_all(procs)


def run_etcd(args: argparse.Namespace, work: Path, binary: str) -> list[Cell]:
    """The same cells against a fresh three-member etcd cluster, loaded at its leader."""
    label = f"etcd {etcd_version(binary)} 3 members"
    cells = []
    with preloaded_etcd(work / "etcd", binary) as etcd:
        for workload, concurrency, processes in _shapes(args):
            result = run_load(
                LoadSpec(etcd.target, workload, concurrency, args.duration, args.warmup,
                         etcd.shape, processes), server_pid=etcd.pids[0], seed=concurrency)
            cell = Cell(label, workload, concurrency, result.processes, result.requests,
                        result.errors, result.duration_s,
                        result.p50_ms if result.requests else None,
                        result.p99_ms if result.requests else None,
                        gen_cpu_cores=result.generator_cpu_cores,
                        server_cpu_cores=result.server_cpu_cores)
            cells.append(cell)
            print(render([cell]).splitlines()[1], flush=True)
    return cells


def one_run(args: argparse.Namespace, work: Path) -> list[Cell]:
    work.mkdir(parents=True)
    cells = run_shardkv(args, work)
    binary = etcd_binary()
    if not args.no_etcd:
        if binary is None:
            print("etcd not installed: skipping etcd", file=sys.stderr)
        else:
            cells.extend(run_etcd(args, work, binary))
    if not args.no_redis:
        requests = 2_000 if args.quick else args.redis_requests
        for fsync in ("always", "everysec"):
            redis = run_redis(fsync, args.concurrency, args.workloads, requests, work)
            for cell in redis:
                print(render([cell]).splitlines()[1], flush=True)
            cells.extend(redis)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=1, help="report medians of N runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=["get", "put", "mget100"],
                        choices=("get", "put", "mget100"))
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--redis-requests", type=int, default=20_000,
                        help="requests per redis-benchmark cell")
    parser.add_argument("--standalone", action="store_true",
                        help="one standalone node (direct mode) instead of the cluster")
    parser.add_argument("--quick", action="store_true", help="1 s cells, concurrency 16 only")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.concurrency, args.processes = 1.0, [16], [1]
    register_mget()

    runs: list[list[Cell]] = []
    with tempfile.TemporaryDirectory(prefix="shardkv-client-bench-") as tmp:
        for index in range(args.runs):
            print(f"-- run {index + 1} of {args.runs}", flush=True)
            runs.append(one_run(args, Path(tmp) / f"run{index + 1}"))
    summary = medians([cell for run in runs for cell in run])
    ratio_rows = ratios(summary)
    print()
    print(f"cpu cores: {os.cpu_count()}; cells of {args.duration:.1f} s; "
          f"medians of {args.runs} run(s)")
    print(render(summary))
    print()
    print("shardkv ops/s over each reference's (same workload, concurrency, client processes;")
    print("redis-benchmark is one process at any concurrency)")
    print(render_ratios(ratio_rows))
    if args.json:
        binary = etcd_binary()
        Path(args.json).write_text(json.dumps({
            "config": {**vars(args), "cpu_cores": os.cpu_count(),
                       "etcd_version": etcd_version(binary) if binary else None,
                       "redis_version": redis_version()},
            "medians": [c.to_dict() for c in summary],
            "ratios": ratio_rows,
            "runs": [[c.to_dict() for c in run] for run in runs],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

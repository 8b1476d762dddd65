"""End-to-end client throughput: ``shardkv.client.Client`` against a local cluster.

What a user of the library gets, everything included: routing with the cached map, one
pipelined connection per node, majority writes through replication, the WAL's fsync policy.
Workloads: ``get``, ``put`` and ``mget100`` (one ``mget`` of 100 random keys, split by shard
and run concurrently), at a total concurrency of 1, 16 and 64 requests in flight, from one
client process and from several (the concurrency is split between them).

In the same run, for scale, the same shapes against ``redis-server`` through
``redis-benchmark`` (appendfsync ``always`` and ``everysec``; GET, SET, and an MGET of 100
keys), and against one etcd member through ``bench.etcd_reference`` when etcd is installed.
redis is single-node and in C; it is the ceiling to read the numbers against, not a peer.

    python -m bench.client_bench                      # ~2 min on 2 cores
    python -m bench.client_bench --quick              # a smoke run
    python -m bench.client_bench --json out.json

Each cell runs ``--duration`` seconds after a short warm-up; the figures are operations per
second and latency percentiles measured by the client (one sample per operation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shardkv.client import Client
from shardkv.cluster.launcher import ClusterPlan, LocalCluster, http_get_json
from shardkv.cluster.launcher import pick_free_port as free_port

KEYSPACE = 10_000
VALUE = b"v" * 100
MGET_KEYS = 100


def key_of(i: int) -> bytes:
    return b"bench:%06d" % i


@dataclass
class Cell:
    system: str
    workload: str
    concurrency: int
    processes: int
    ops: int
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index] * 1000


async def _drive(target: dict[str, Any], workload: str, in_flight: int, duration: float,
                 warmup: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[float] = []
    ops = errors = 0
    async with Client(**target, timeout=10.0) as kv:
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup
        stop_at = measure_from + duration

        async def one() -> None:
            if workload == "get":
                await kv.get(key_of(rng.randrange(KEYSPACE)))
            elif workload == "put":
                await kv.put(key_of(rng.randrange(KEYSPACE)), VALUE)
            else:
                await kv.mget([key_of(rng.randrange(KEYSPACE)) for _ in range(MGET_KEYS)])

        async def worker() -> None:
            nonlocal ops, errors
            while (now := loop.time()) < stop_at:
                try:
                    await one()
                except Exception:
                    if now >= measure_from:
                        errors += 1
                    continue
                if now >= measure_from:
                    ops += 1
                    latencies.append(loop.time() - now)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return {"ops": ops, "errors": errors, "latencies": latencies}


def _process_main(args: tuple[dict[str, Any], str, int, float, float, int]) -> dict[str, Any]:
    return asyncio.run(_drive(*args))


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
                percentile(latencies, 0.5), percentile(latencies, 0.99))


async def _preload(target: dict[str, Any]) -> None:
    async with Client(**target, timeout=30.0) as kv:
        batch = 500
        for start in range(0, KEYSPACE, batch):
            await kv.mput([(key_of(i), VALUE) for i in range(start, min(start + batch, KEYSPACE))])


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


# -- redis, for scale ---------------------------------------------------------------------


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def run_redis(fsync: str, concurrencies: list[int], requests: int,
              work: Path) -> list[Cell]:
    server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if not server or not bench:
        print("redis-server/redis-benchmark not installed: skipping redis", file=sys.stderr)
        return []
    port = free_port()
    data = work / f"redis-{fsync}"
    data.mkdir()
    proc = subprocess.Popen([server, "--port", str(port), "--dir", str(data), "--save", "",
                             "--appendonly", "yes", "--appendfsync", fsync],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells: list[Cell] = []
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        keys = [f"key:{i:012d}" for i in range(MGET_KEYS)]  # the names -r fills in
        subprocess.run([bench, "-p", str(port), "-n", str(KEYSPACE), "-r", str(KEYSPACE),
                        "-d", "100", "-t", "set", "-q"], capture_output=True, check=True,
                       timeout=120)
        for concurrency in concurrencies:
            shapes = [("get", ["-t", "get"]), ("put", ["-t", "set"]),
                      ("mget100", ["MGET", *keys])]
            for workload, extra in shapes:
                started = time.monotonic()
                out = subprocess.run(
                    [bench, "-p", str(port), "-n", str(requests), "-c", str(concurrency),
                     "-r", str(KEYSPACE), "-d", "100", "--csv", *extra],
                    capture_output=True, text=True, check=True, timeout=300)
                seconds = time.monotonic() - started
                row = [line for line in out.stdout.splitlines() if line and line[0] == '"'
                       and not line.startswith('"test"')][-1]
                fields = [f.strip('"') for f in row.split(",")]
                rps = float(fields[1])
                # "test","rps","avg","min","p50","p95","p99","max" (milliseconds)
                p50 = float(fields[4]) if len(fields) > 6 else None
                p99 = float(fields[6]) if len(fields) > 6 else None
                cells.append(Cell(f"redis appendfsync={fsync}", workload, concurrency, 1,
                                  round(rps * seconds), 0, seconds, p50, p99))
    finally:
        proc.terminate()
        proc.wait(10)
    return cells


# -- the run -------------------------------------------------------------------------------


def render(cells: list[Cell]) -> str:
    lines = [f"{'system':<28} {'workload':<8} {'conc':>4} {'procs':>5} {'ops/s':>10} "
             f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"]
    for c in cells:
        p50 = f"{c.p50_ms:.2f}" if c.p50_ms is not None else "-"
        p99 = f"{c.p99_ms:.2f}" if c.p99_ms is not None else "-"
        lines.append(f"{c.system:<28} {c.workload:<8} {c.concurrency:>4} {c.processes:>5} "
                     f"{c.ops_per_s:>10,.0f} {p50:>8} {p99:>8} {c.errors:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=["get", "put", "mget100"])
    parser.add_argument("--fsync", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--standalone", action="store_true",
                        help="one standalone node (direct mode) instead of the cluster")
    parser.add_argument("--quick", action="store_true", help="1 s cells, concurrency 16 only")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.concurrency, args.processes = 1.0, [16], [1]

    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="shardkv-client-bench-") as tmp:
        work = Path(tmp)
        if args.standalone:
            node = start_standalone(work, args.fsync)
            target = {"nodes": [node.url]}
            label = f"shardkv fsync={args.fsync} standalone"
            stop = node.stop
        else:
            plan = ClusterPlan.new(work / "cluster", shards=args.shards,
                                   replicas=args.replicas, coordinators=3, fsync=args.fsync)
            cluster = LocalCluster(work / "cluster", plan)
            target = {"coordinators": plan.coordinator_urls()}
            label = f"shardkv fsync={args.fsync} {args.shards}x{args.replicas}"
            stop = cluster.stop
        try:
            if not args.standalone:
                cluster.start()
                cluster.wait_ready(120)
            asyncio.run(_preload(target))
            for workload in args.workloads:
                for concurrency in args.concurrency:
                    for processes in args.processes:
                        if processes > concurrency:
                            continue
                        cell = run_cell(target, workload, concurrency, processes,
                                        args.duration, args.warmup)
                        cell.system = label
                        cells.append(cell)
                        print(render([cell]).splitlines()[1], flush=True)
        finally:
            stop()
        if not args.no_redis:
            requests = 2_000 if args.quick else 20_000
            for fsync in ("always", "everysec"):
                cells.extend(run_redis(fsync, args.concurrency, requests, work))
    print()
    print(f"cpu cores: {os.cpu_count()}; cells of {args.duration:.1f} s")
    print(render(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**asdict(c), "ops_per_s": c.ops_per_s} for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

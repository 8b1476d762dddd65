"""redis as a reference for the client benchmark: ``redis-server`` with an append-only file
(``appendfsync always`` or ``everysec``), loaded by ``redis-benchmark`` (GET, SET, and an MGET
of 100 keys).

redis is one process in C with no replication here: it is the ceiling to read shardkv's client
figures against, not a peer. redis-benchmark is a single process whatever the concurrency;
its CPU is the children's getrusage over its run.
"""

from __future__ import annotations

import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from shardkv.cluster.local_processes import free_port

from bench.client_cells import Cell

KEYSPACE = 10_000
VALUE_SIZE = 100
MGET_KEYS = 100


def redis_version() -> str | None:
    server = shutil.which("redis-server")
    if not server:
        return None
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_redis(fsync: str, concurrencies: list[int], workloads: list[str], requests: int,
              work: Path) -> list[Cell]:
    """Every (workload, concurrency) against a fresh redis-server; [] when not installed."""
    server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if not server or not bench:
        print("redis-server/redis-benchmark not installed: skipping redis", file=sys.stderr)
        return []
    port = free_port()
    data = work / f"redis-{fsync}"
    data.mkdir(parents=True, exist_ok=True)
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
        # Preload pipelined (-P): with appendfsync always, redis fsyncs once per event-loop
        # turn, so 10,000 unpipelined SETs would cost seconds of fsyncs before any cell.
        subprocess.run([bench, "-p", str(port), "-n", str(KEYSPACE), "-r", str(KEYSPACE),
                        "-d", str(VALUE_SIZE), "-P", "50", "-t", "set", "-q"],
                       capture_output=True, check=True, timeout=120)
        shapes = {"get": ["-t", "get"], "put": ["-t", "set"], "mget100": ["MGET", *keys]}
        for concurrency in concurrencies:
            for workload in workloads:
                if workload not in shapes:
                    continue
                cpu_before, started = _children_cpu(), time.monotonic()
                out = subprocess.run(
                    [bench, "-p", str(port), "-n", str(requests), "-c", str(concurrency),
                     "-r", str(KEYSPACE), "-d", str(VALUE_SIZE), "--csv", *shapes[workload]],
                    capture_output=True, text=True, check=True, timeout=300)
                seconds = time.monotonic() - started
                gen_cpu = (_children_cpu() - cpu_before) / seconds
                row = [line for line in out.stdout.splitlines() if line and line[0] == '"'
                       and not line.startswith('"test"')][-1]
                fields = [f.strip('"') for f in row.split(",")]
                rps = float(fields[1])
                # "test","rps","avg","min","p50","p95","p99","max" (milliseconds)
                p50 = float(fields[4]) if len(fields) > 6 else None
                p99 = float(fields[6]) if len(fields) > 6 else None
                # redis-benchmark's own rate leaves out its start-up: keep it exact
                cells.append(Cell(f"redis appendfsync={fsync}", workload, concurrency, 1,
                                  requests, 0, requests / rps, p50, p99,
                                  gen_cpu_cores=gen_cpu))
    finally:
        proc.terminate()
        proc.wait(10)
    return cells

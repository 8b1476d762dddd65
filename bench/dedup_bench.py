"""What exactly-once writes cost: put and incr throughput with client sessions on vs off, and
the memory of the shard's dedup table per 10,000 active clients.

Throughput: one standalone node (memory engine, ``--fsync never`` unless told otherwise, so
the node's CPU, where the dedup work is, is the bottleneck rather than the disk), two
``Client``s in this process, one stamping writes (the default) and one not
(``exactly_once=False``). Rounds alternate the two modes (on-off, then off-on, ...) so drift
in the machine's load hits both alike; each cell runs ``--duration`` seconds at
``--concurrency`` writes in flight, and the figure is the median over ``--rounds``.
With sessions each write also logs its session record (one more mutation in the same entry)
and takes the store lock even when it is a blind put.

The machine this runs on is often shared, so two more measures take the scheduler out: the
node's cost per write (operations per CPU-second of the node process, over the same cells),
and the Store alone in this process (writes per CPU-second of this process, alternated the
same way), which isolates the dedup work from the network and the rpc layer.

Memory: a Store opened in this process (memory engine), ``--clients`` incrs by distinct
client ids against the same key, measured with tracemalloc against the same number of
unstamped incrs: the difference is what the dedup rows cost (per 10,000 clients).

    nice python -m bench.dedup_bench                     # ~1 min
    nice python -m bench.dedup_bench --rounds 5 --duration 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from shardkv.client import Client
from shardkv.node.storage.sessions import Session
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

from bench.proc_stats import process_cpu_seconds
from bench.shardkv_node import shardkv_node

WORKLOADS = ("put", "incr")


async def _cell(kv: Client, workload: str, concurrency: int, duration: float
                ) -> tuple[float, int]:
    """(Operations per second, operations) of ``workload`` at ``concurrency`` in flight."""
    done = 0
    stop_at = time.perf_counter() + duration
    value = b"x" * 100

    async def worker(worker_id: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            if workload == "put":
                await kv.put(f"p-{worker_id}-{i % 1000}", value)
            else:
                await kv.incr(f"c-{worker_id % 8}")
            done += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - started), done


Samples = dict[str, dict[str, list[float]]]


async def throughput(url: str, node_pid: int, *, rounds: int, duration: float,
                     concurrency: int) -> tuple[Samples, Samples]:
    """Client ops/s, and ops per CPU-second of the node process (the node's cost per write,
    which the machine's other load does not change the way it changes wall-clock rates)."""
    samples: Samples = {w: {"on": [], "off": []} for w in WORKLOADS}
    per_cpu: Samples = {w: {"on": [], "off": []} for w in WORKLOADS}
    async with Client(nodes=[url]) as on, Client(nodes=[url], exactly_once=False) as off:
        clients = {"on": on, "off": off}
        for workload in WORKLOADS:  # warm-up: connections, caches, the allocator
            for kv in clients.values():
                await _cell(kv, workload, concurrency, min(duration, 0.5))
        for round_no in range(rounds):
            order = ("on", "off") if round_no % 2 == 0 else ("off", "on")
            for workload in WORKLOADS:
                for mode in order:
                    cpu_before = process_cpu_seconds(node_pid)
                    rate, done = await _cell(clients[mode], workload, concurrency, duration)
                    cpu = process_cpu_seconds(node_pid) - cpu_before
                    samples[workload][mode].append(rate)
                    per_cpu[workload][mode].append(done / max(cpu, 1e-3))
    return samples, per_cpu


async def store_cpu(directory: Path, *, rounds: int, ops: int, concurrency: int
                    ) -> dict[str, dict[str, list[float]]]:
    """The Store alone, in this process: writes per CPU-second (``time.process_time``), so
    the figure is the work a write costs, not how much CPU the loaded machine lent us."""
    samples: dict[str, dict[str, list[float]]] = {
        w: {"on": [], "off": []} for w in WORKLOADS}
    store = await Store.open(StoreConfig(data_dir=directory, wal=WalOptions(
        fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0))
    seqs = [0] * concurrency
    value = b"x" * 100
    try:
        async def run(workload: str, stamped: bool) -> float:
            async def worker(w: int) -> None:
                for i in range(ops // concurrency):
                    session = None
                    if stamped:
                        seqs[w] += 1
                        session = Session(b"bench-%d" % w, seqs[w])
                    if workload == "put":
                        await store.put(b"p-%d-%d" % (w, i % 1000), value, session=session)
                    else:
                        await store.incr(b"c-%d" % (w % 8), session=session)

            started = time.process_time()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            return (ops // concurrency) * concurrency / (time.process_time() - started)

        for workload in WORKLOADS:
            await run(workload, True)
            await run(workload, False)
        for round_no in range(rounds):
            order = (True, False) if round_no % 2 == 0 else (False, True)
            for workload in WORKLOADS:
                for stamped in order:
                    samples[workload]["on" if stamped else "off"].append(
                        await run(workload, stamped))
    finally:
        await store.close()
    return samples


async def dedup_memory(clients: int, directory: Path) -> dict[str, float]:
    """Bytes the dedup rows of ``clients`` sessions hold in the memory engine."""

    async def retained(stamped: bool, sub: str) -> int:
        store = await Store.open(StoreConfig(data_dir=directory / sub, wal=WalOptions(
            fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0, max_sessions=clients * 2,
            snapshot_wal_bytes=1 << 40))
        try:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for client in range(clients):
                session = Session(b"%016x" % client + b"\0\0\0\1", 1) if stamped else None
                await store.incr(b"counter", session=session)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            return used
        finally:
            await store.close()

    with_sessions = await retained(True, "on")
    without = await retained(False, "off")
    per_client = (with_sessions - without) / clients
    return {"clients": clients, "bytes_with_sessions": with_sessions,
            "bytes_without": without, "bytes_per_client": round(per_client, 1),
            "mib_per_10k_clients": round(per_client * 10_000 / (1 << 20), 2)}


def _medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    table = {}
    for workload, modes in samples.items():
        on, off = statistics.median(modes["on"]), statistics.median(modes["off"])
        table[workload] = {"on_median": on, "off_median": off, "ratio": round(on / off, 4),
                           "on": modes["on"], "off": modes["off"]}
    return table


def render(result: dict[str, Any]) -> str:
    lines = [f"{'measure':<22} {'on':>10} {'off':>10} {'on/off':>7}"]
    for title, section in (("client ops/s", "throughput"), ("node ops/cpu-s", "node_cpu"),
                           ("store ops/cpu-s", "store_cpu")):
        for workload, row in result[section].items():
            lines.append(f"{title + ' ' + workload:<22} {row['on_median']:>10.0f} "
                         f"{row['off_median']:>10.0f} {row['ratio']:>7.3f}")
    mem = result["memory"]
    lines.append(f"dedup table: {mem['bytes_per_client']:.0f} B per client, "
                 f"{mem['mib_per_10k_clients']:.2f} MiB per 10,000 clients (memory engine)")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        work = Path(tmp)
        with shardkv_node(work, fsync=args.fsync).start() as node:
            samples, node_cpu = await throughput(
                node.url, node.pid, rounds=args.rounds, duration=args.duration,
                concurrency=args.concurrency)
        cpu = await store_cpu(work / "cpu", rounds=args.rounds, ops=args.store_ops,
                              concurrency=args.concurrency)
        memory = await dedup_memory(args.clients, work / "mem")
    return {"config": vars(args), "throughput": _medians(samples),
            "node_cpu": _medians(node_cpu), "store_cpu": _medians(cpu), "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fsync", default="never", choices=("never", "interval", "always"))
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--store-ops", type=int, default=20_000,
                        help="writes per store-only cell")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2, default=str)
    print(text)
    print(render(result))
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()

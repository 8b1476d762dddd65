"""Online resharding, 2 -> 3 shards (issue 12), or 3 -> 2 with ``--op remove``: how fast
keys move, and what the foreground load feels meanwhile.

A local cluster (1 coordinator, 2 shards x ``--replicas`` members, ``--engine``, fsync
``--fsync``) is loaded with ``--keys`` keys of ``--value-bytes`` bytes. Then, side by side in
one run: a foreground load of gets and puts (``--concurrency`` in flight, half each) runs for
``--baseline-s`` seconds without a migration, then again while ``POST /admin/shards`` adds
s3 (its members started as processes) until the migration is ``done``. Reported: keys and MB
moved per second of copy (from the target's floor to the flip), time to ``done`` and its
phases (waiting for the new members to start, copy to flip, cleaning), foreground get/put
p50/p99 in both phases, and failed foreground operations (retries within the deadline are
not failures). ``breakdown``: each node's copy clock as last seen (a source's time waiting
for acknowledgements, in the throttle, hashing, encoding; a target's decoding, filtering,
WAL write up to applied, fsyncs: node/migration/stage_clock.py). CPU: node CPU seconds per
1,000,000 keys moved, for the copy and for the cleaning, net of what the foreground
operations of the window cost at the baseline rate (bench/reshard_cpu.py): less disturbed by
a shared machine than keys/s.

    nice python -m bench.reshard_bench --keys 100000            # a few minutes here
    nice python -m bench.reshard_bench --keys 1000000 --json out.json
    nice python -m bench.reshard_bench --keys 100000 --op remove

``--op remove`` starts 3 shards and drains s3 into s1 and s2 (``DELETE /admin/shards/s3``):
its targets hold keys, so the copy starts with their LSN jump (a snapshot of each, writes
held meanwhile), which the foreground figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from shardkv.client import Client
from shardkv.cluster.launcher import ClusterPlan, LocalCluster
from shardkv.cluster.shard_members import start_shard_members

from bench.reshard_cpu import NodeCpu, migration_cpu


def _admin(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def _copy_clocks(cluster: LocalCluster, into: dict[str, Any]) -> None:
    """The copy clock of every node's export and import, kept per node as last seen (the
    export's status goes away at the flip)."""
    for spec in cluster.plan.nodes:
        for side in ("export", "import", "clean"):
            try:
                status = _admin("GET", f"{spec.url}/internal/migration/{side}")
            except OSError:
                continue
            if side == "clean":
                if isinstance(status, dict) and status.get("deleted"):
                    into[f"{spec.id}:clean"] = {k: status.get(k) for k in (
                        "deleted", "passes", "throttle", "clean_clock", "gc")}
                continue
            clock = status.get("copy_clock") if isinstance(status, dict) else None
            if clock and clock.get("wall_s"):
                into[f"{spec.id}:{side}"] = {
                    **clock, "keys": status.get("keys_sent", sum(
                        s.get("keys", 0) for s in (status.get("sources") or {}).values())),
                    **{k: status[k] for k in ("throttle", "gc") if k in status}}


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


class Foreground:
    """Gets and puts on the loaded keys, latencies recorded per op."""

    def __init__(self, kv: Client, keys: int, value: bytes, concurrency: int) -> None:
        self.kv, self.keys, self.value, self.concurrency = kv, keys, value, concurrency
        self.lat: dict[str, list[float]] = {"get": [], "put": []}
        # (wall-clock end, op, seconds) of every op, to split the migration into phases
        self.timeline: list[tuple[float, str, float]] = []
        self.failed = 0
        self.completed = 0
        self._stop = asyncio.Event()

    async def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            key = f"k{rng.randrange(self.keys):09d}"
            op = "get" if rng.random() < 0.5 else "put"
            started = time.perf_counter()
            try:
                if op == "get":
                    await self.kv.get(key)
                else:
                    await self.kv.put(key, self.value)
            except Exception:
                self.failed += 1
                continue
            took = time.perf_counter() - started
            self.lat[op].append(took)
            self.timeline.append((time.time(), op, took))
            self.completed += 1

    def phases(self, edges: list[tuple[str, float, float]]) -> dict[str, Any]:
        """p50/p99 per op of the ops that ended inside each ``(name, start, end)`` window
        (wall clock): which part of a migration the foreground's tail comes from."""
        out: dict[str, Any] = {}
        for name, start, end in edges:
            inside = [(op, took) for at, op, took in self.timeline if start <= at < end]
            out[name] = {"ops": len(inside), **{
                f"{op}_{label}_ms": _pct([t for o, t in inside if o == op], q)
                for op in ("get", "put") for label, q in (("p50", 0.5), ("p99", 0.99))}}
        return out

    def ops(self) -> int:
        """Operations completed since the start (not reset per phase)."""
        return self.completed

    async def run_until(self, done: Any) -> dict[str, Any]:
        self._stop.clear()
        self.lat = {"get": [], "put": []}
        self.timeline = []
        self.failed = 0
        workers = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]
        started = time.monotonic()
        await done()
        self._stop.set()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
        return {
            "seconds": round(elapsed, 2), "failed": self.failed,
            **{f"{op}_{name}_ms": _pct(lat, q) for op, lat in self.lat.items()
               for name, q in (("p50", 0.5), ("p99", 0.99))},
            "ops_s": round(sum(len(v) for v in self.lat.values()) / elapsed, 1),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="reshard-bench-"))
    plan = ClusterPlan.new(directory, shards=3 if args.op == "remove" else 2,
                           replicas=args.replicas, coordinators=1,
                           engine=args.engine, fsync=args.fsync)
    cluster = LocalCluster(directory, plan)
    cluster.start()
    try:
        cluster.wait_ready(120)
        coordinator = plan.coordinators[0].url
        value = b"v" * args.value_bytes
        async with Client([coordinator], timeout=30.0) as kv:
            loaded = time.monotonic()
            batch = 500
            loading = asyncio.Semaphore(8)  # batches in flight: the load is not measured

            async def load(start: int) -> None:
                async with loading:
                    await kv.mput({f"k{i:09d}": value
                                   for i in range(start, min(start + batch, args.keys))})

            await asyncio.gather(*(load(s) for s in range(0, args.keys, batch)))
            load_s = time.monotonic() - loaded
            fg = Foreground(kv, args.keys, value, args.concurrency)
            track = NodeCpu(cluster, fg.ops)
            track.sample()
            base_started = time.time()
            baseline = await fg.run_until(lambda: asyncio.sleep(args.baseline_s))
            track.sample()
            base_cpu, base_ops = track.window(base_started, time.time())
            cpu_per_op = base_cpu / base_ops if base_ops else 0.0

            migration: dict[str, Any] = {}
            clocks: dict[str, Any] = {}

            async def migrate() -> None:
                if args.op == "remove":
                    answer = await asyncio.to_thread(_admin, "DELETE",
                                                     f"{coordinator}/admin/shards/s3")
                else:
                    answer = await asyncio.to_thread(_admin, "POST",
                                                     f"{coordinator}/admin/shards",
                                                     {"shard": "s3"})
                    start_shard_members(cluster, "s3")
                while True:
                    track.sample()
                    await asyncio.to_thread(_copy_clocks, cluster, clocks)
                    record = await asyncio.to_thread(
                        _admin, "GET", f"{coordinator}/admin/migrations/{answer['migration']}")
                    if record["state"] in ("done", "aborted", "failed"):
                        migration.update(record)
                        return
                    await asyncio.sleep(0.2)

            during = await fg.run_until(migrate)
            track.sample()
            flip = migration["flipped_at"]
            during["phases"] = fg.phases([
                ("before_copy", 0.0, migration["copy_started_at"]),
                ("copy", migration["copy_started_at"], flip - 0.5),
                ("flip_1s", flip - 0.5, flip + 0.5),
                ("cleaning", flip + 0.5, float("inf"))])
        took = migration["finished_at"] - migration["started_at"]
        copy_s = migration["flipped_at"] - migration["copy_started_at"]
        per_1m = 1e6 / max(1, migration["keys_moved"])
        copy_cpu = migration_cpu(track, migration["copy_started_at"], migration["flipped_at"],
                                 cpu_per_op)
        clean_cpu = migration_cpu(track, migration["flipped_at"], migration["finished_at"],
                                  cpu_per_op)
        return {
            "op": args.op, "keys": args.keys, "value_bytes": args.value_bytes,
            "engine": args.engine,
            "fsync": args.fsync, "replicas": args.replicas, "load_s": round(load_s, 1),
            "migration_state": migration["state"], "keys_moved": migration["keys_moved"],
            "mb_moved": round(migration["bytes_moved"] / 1e6, 2),
            "time_to_done_s": round(took, 2),
            "waiting_for_members_s": round(migration["copy_started_at"]
                                           - migration["started_at"], 2),
            "copy_to_flip_s": round(copy_s, 2),
            "cleaning_s": round(migration["finished_at"] - migration["flipped_at"], 2),
            "keys_per_s": round(migration["keys_moved"] / copy_s, 1),
            "mb_per_s": round(migration["bytes_moved"] / 1e6 / copy_s, 2),
            "cpu_s_per_1m_keys_copy": round(copy_cpu * per_1m, 2),
            "cpu_s_per_1m_keys_clean": round(clean_cpu * per_1m, 2),
            "node_cpu_ms_per_fg_op": round(cpu_per_op * 1000, 3),
            "node_cpu_s_copy": track.node_window(migration["copy_started_at"],
                                                 migration["flipped_at"]),
            "node_cpu_s_clean": track.node_window(migration["flipped_at"],
                                                  migration["finished_at"]),
            "baseline": baseline, "during_migration": during, "breakdown": clocks,
            # Wall-clock edges (the coordinator's clock: one machine), for probes that
            # record by time (bench/loop_probe).
            "at": {"baseline": base_started, "started": migration["started_at"],
                   "copy_started": migration["copy_started_at"], "flipped": flip,
                   "finished": migration["finished_at"]},
        }
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _table(r: dict[str, Any]) -> str:
    """The figures the issue's goals are about, one per line."""
    base, during = r["baseline"], r["during_migration"]

    def p99(op: str) -> str:
        b, d = base.get(f"{op}_p99_ms"), during.get(f"{op}_p99_ms")
        return "-" if b is None or d is None else f"{b} -> {d} ms ({d / b:.2f}x)"

    rows = [("keys moved", r["keys_moved"]),
            ("keys/s (MB/s), floor to flip", f"{r['keys_per_s']} ({r['mb_per_s']})"),
            ("copy / cleaning / to done s", f"{r['copy_to_flip_s']} / {r['cleaning_s']} / "
                                            f"{r['time_to_done_s']}"),
            ("CPU s per 1M keys copy + clean", f"{r['cpu_s_per_1m_keys_copy']} + "
                                               f"{r['cpu_s_per_1m_keys_clean']}"),
            ("get p99 base -> during", p99("get")), ("put p99 base -> during", p99("put")),
            ("failed foreground ops", during["failed"])]
    for name, phase in (during.get("phases") or {}).items():
        rows.append((f"  p99 get/put in {name}",
                     f"{phase['get_p99_ms']} / {phase['put_p99_ms']} ms ({phase['ops']} ops)"))
    return "\n".join(f"{name:<32} {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--op", choices=("add", "remove"), default="add",
                        help="add s3 to 2 shards, or drain s3 of 3 into the others")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(_table(result))
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")



if __name__ == "__main__":
    main()

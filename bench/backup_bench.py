"""Backup and restore throughput, the foreground's p99 during a backup, the zstd ratio, and
``etcdctl snapshot save/restore`` on the same data in the same run (by hand; docs/backup.md).

    python -m bench.backup_bench --keys 200000           # ~2-4 min on a small machine
    python -m bench.backup_bench --keys 1000000 --json backup.json
    python -m bench.backup_bench --keys 20000 --no-etcd  # a smoke run

A source cluster (2 shards x 2 members, 1 coordinator, memory engine) is loaded with
``--keys`` keys of ``--value-bytes`` text-like values through ``mput``; four foreground clients
(put + get) run for a baseline window and again during ``shardkv backup create`` to a local
directory; the backup is restored into a second cluster of another shape (3 shards x 1).
etcd (one member, when installed) gets the same keys through its gateway, then
``etcdctl snapshot save`` and ``etcdctl snapshot restore`` are timed. Prints a table and one
JSON document (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from shardkv.backup.inspection import verify
from shardkv.backup.repository.catalog import load_manifest
from shardkv.backup.repository.destination import LocalDestination
from shardkv.client import Client
from shardkv.cluster.launcher import ClusterPlan, LocalCluster

from bench.etcd_reference import MAX_TXN_OPS, EtcdGatewayClient, etcd_binary, etcd_member

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
LOAD_BATCH = 1000
LOAD_CONCURRENCY = 8
FOREGROUND_CLIENTS = 4


def _value(rng: random.Random, size: int) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(size // 5 + 1))
    return f"{rng.randrange(1 << 30):x} {text}".encode()[:size]


def _items(keys: int, value_bytes: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [(f"user:{i:08d}".encode(), _value(rng, value_bytes)) for i in range(keys)]


async def _load(urls: list[str], items: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    queue = [items[i:i + LOAD_BATCH] for i in range(0, len(items), LOAD_BATCH)]

    async def worker(kv: Client) -> None:
        while queue:
            await kv.mput(queue.pop())
    async with Client(urls, timeout=60) as kv:
        await asyncio.gather(*(worker(kv) for _ in range(LOAD_CONCURRENCY)))
    return time.perf_counter() - started


async def _foreground(urls: list[str], keys: int, stop: asyncio.Event) -> list[float]:
    """Latencies (s) of puts and gets by FOREGROUND_CLIENTS clients until ``stop``."""
    latencies: list[float] = []

    async def client(n: int) -> None:
        rng = random.Random(n)
        async with Client(urls, timeout=30) as kv:
            while not stop.is_set():
                key = f"user:{rng.randrange(keys):08d}"
                started = time.perf_counter()
                if rng.random() < 0.5:
                    await kv.put(key, b"foreground")
                else:
                    await kv.get(key)
                latencies.append(time.perf_counter() - started)
    await asyncio.gather(*(client(n) for n in range(FOREGROUND_CLIENTS)))
    return latencies


def _cli(*argv: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", "backup", *argv],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"shardkv backup {argv[0]} failed: {done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _shardkv(work: Path, items: list[tuple[bytes, bytes]], baseline_s: float,
                   fsync: str, max_rate: float | None, parallel: int) -> dict[str, Any]:
    source = LocalCluster(work / "source", ClusterPlan.new(
        work / "source", shards=2, replicas=2, coordinators=1, fsync=fsync))
    target = LocalCluster(work / "target", ClusterPlan.new(
        work / "target", shards=3, replicas=1, coordinators=1, fsync=fsync))
    results: dict[str, Any] = {}
    try:
        for cluster in (source, target):
            cluster.start()
            cluster.wait_ready(120)
        src, dst = source.plan.coordinator_urls(), target.plan.coordinator_urls()
        results["load_s"] = round(await _load(src, items), 2)
        stop = asyncio.Event()
        task = asyncio.create_task(_foreground(src, len(items), stop))
        await asyncio.sleep(baseline_s)
        stop.set()
        baseline = await task
        dest = LocalDestination(work / "backups", create=True)
        stop = asyncio.Event()
        task = asyncio.create_task(_foreground(src, len(items), stop))
        # The backup runs as the operator runs it, in its own process: in this one its CPU
        # would compete for the GIL with the foreground clients and inflate their latency.
        started = time.perf_counter()
        rate = ["--max-rate", str(max_rate)] if max_rate else []
        rate += ["--parallel", str(parallel)]
        created = await asyncio.to_thread(_cli, "create", "--to", str(dest.root),
                                          "--coordinator", ",".join(src), "--json", *rate)
        wall_s = time.perf_counter() - started
        backup_s = float(created["seconds"])  # the backup itself, without process start-up
        stop.set()
        during = await task
        manifest = load_manifest(dest, created["backup"])
        started = time.perf_counter()
        report = verify(dest)
        verify_s = time.perf_counter() - started
        assert report.ok, report.problems
        rep = await asyncio.to_thread(_cli, "restore", "--from", str(dest.root),
                                      "--coordinator", ",".join(dst), "--json")
        raw_mb, stored_mb = manifest.raw_bytes / 1e6, manifest.stored_bytes / 1e6
        results.update({
            "keys": manifest.keys, "raw_mb": round(raw_mb, 2), "stored_mb": round(stored_mb, 2),
            "zstd_ratio": round(raw_mb / stored_mb, 2) if stored_mb else None,
            "backup_s": round(backup_s, 2), "backup_keys_s": round(manifest.keys / backup_s),
            "backup_mb_s": round(raw_mb / backup_s, 2), "verify_s": round(verify_s, 2),
            "restore_s": rep["seconds"], "restore_keys_s": round(rep["keys_per_s"]),
            "restore_mb_s": rep["mb_per_s"],
            "fg_p50_ms_baseline": _pct(baseline, 0.5), "fg_p99_ms_baseline": _pct(baseline, 0.99),
            "fg_p50_ms_during_backup": _pct(during, 0.5),
            "fg_p99_ms_during_backup": _pct(during, 0.99),
            "fg_ops_s_baseline": round(len(baseline) / baseline_s),
            "fg_ops_s_during_backup": round(len(during) / wall_s),
            "shards_read_from": sorted(f"{s}:{b.role}" for s, b in manifest.shards.items()),
        })
    finally:
        source.stop()
        target.stop()
    return results


def _etcdctl(etcdctl: str, *argv: str) -> float:
    started = time.perf_counter()
    subprocess.run([etcdctl, *argv], check=True, capture_output=True, env={"ETCDCTL_API": "3"})
    return time.perf_counter() - started


async def _etcd(work: Path, items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    binary = etcd_binary()
    etcdctl = shutil.which("etcdctl")
    if binary is None or etcdctl is None:
        return {"skipped": "etcd/etcdctl not installed (scripts/install-reference-systems.sh)"}
    member = etcd_member(work / "etcd", binary=binary)
    (work / "etcd").mkdir(parents=True, exist_ok=True)
    member.start()
    try:
        started = time.perf_counter()
        batches = [items[i:i + MAX_TXN_OPS] for i in range(0, len(items), MAX_TXN_OPS)]
        async with aiohttp.ClientSession() as session:
            kv = EtcdGatewayClient(member.url, session)

            async def worker() -> None:
                while batches:
                    await kv.put_batch(batches.pop())
            await asyncio.gather(*(worker() for _ in range(LOAD_CONCURRENCY)))
        load_s = time.perf_counter() - started
        snap = work / "etcd.snapshot"
        save_s = await asyncio.to_thread(_etcdctl, etcdctl, f"--endpoints={member.url}",
                                         "snapshot", "save", str(snap))
    finally:
        member.stop()
    restore_s = await asyncio.to_thread(_etcdctl, etcdctl, "snapshot", "restore", str(snap),
                                        "--data-dir", str(work / "etcd-restored"))
    size_mb = snap.stat().st_size / 1e6
    return {"load_s": round(load_s, 2), "snapshot_mb": round(size_mb, 2),
            "save_s": round(save_s, 2), "save_keys_s": round(len(items) / save_s),
            "save_mb_s": round(size_mb / save_s, 2), "restore_s": round(restore_s, 2),
            "restore_keys_s": round(len(items) / restore_s)}


def _table(results: dict[str, Any]) -> str:
    s, e = results["shardkv"], results.get("etcd", {})
    lines = [f"{results['keys']} keys of {results['value_bytes']} bytes"
             f"{'':<6} {'shardkv':>14} {'etcd':>14}"]
    pairs = [("backup seconds", s["backup_s"], e.get("save_s")),
             ("backup keys/s", s["backup_keys_s"], e.get("save_keys_s")),
             ("backup MB/s (raw)", s["backup_mb_s"], e.get("save_mb_s")),
             ("restore seconds", s["restore_s"], e.get("restore_s")),
             ("restore keys/s", s["restore_keys_s"], e.get("restore_keys_s")),
             ("restore MB/s (raw)", s["restore_mb_s"], None),
             ("stored MB", s["stored_mb"], e.get("snapshot_mb")),
             ("raw MB / zstd ratio", f"{s['raw_mb']} / {s['zstd_ratio']}", None),
             ("verify seconds", s["verify_s"], None),
             ("fg p99 ms base -> backup", f"{s['fg_p99_ms_baseline']} -> "
                                          f"{s['fg_p99_ms_during_backup']}", None),
             ("fg ops/s base -> backup", f"{s['fg_ops_s_baseline']} -> "
                                         f"{s['fg_ops_s_during_backup']}", None)]
    for name, ours, theirs in pairs:
        lines.append(f"{name:<28} {ours!s:>14} {'-' if theirs is None else theirs!s:>14}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--baseline-s", type=float, default=5.0)
    parser.add_argument("--fsync", default="never", choices=("always", "interval", "never"))
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--parallel", type=int, default=1, metavar="N",
                        help="passed to `shardkv backup create` (shards at a time)")
    parser.add_argument("--max-rate", type=float, metavar="MB/S",
                        help="passed to `shardkv backup create` (throttled backup)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    items = _items(args.keys, args.value_bytes)
    with tempfile.TemporaryDirectory(prefix="backup-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {"keys": args.keys, "value_bytes": args.value_bytes,
                                   "fsync": args.fsync, "max_rate": args.max_rate,
                                   "parallel": args.parallel}
        results["shardkv"] = asyncio.run(_shardkv(work, items, args.baseline_s, args.fsync,
                                                  args.max_rate, args.parallel))
        if not args.no_etcd:
            results["etcd"] = asyncio.run(_etcd(work, items))
    print(_table(results))
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

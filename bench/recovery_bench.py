"""Recovery time and memory footprint of the storage layer.

Two measurements:

1. **Memory per million small keys** (memory engine): RSS growth while a fresh
   ``MemoryEngine`` takes N keys (``key:%08d`` -> 16-byte value), applied as WAL entries of
   1,000 puts each, exactly as the Store would apply them.
2. **Recovery time** (memory or sqlite engine): a Store is loaded with N keys (``mput`` of
   1,000 keys per entry), snapshotted, then given ``--wal-entries`` single-key puts after the
   snapshot; it is closed and reopened, and the time of ``Store.open`` (snapshot load + WAL
   replay) is reported together with the Store's own recovery report.

Prints a table and, last, one JSON line (for scripts)::

    .venv/bin/python bench/recovery_bench.py                      # 1M keys, memory engine
    .venv/bin/python bench/recovery_bench.py --keys 200000 --engine sqlite
    # A/B of recovery CPU: build once, then reopen with each checkout's interpreter
    .venv/bin/python bench/recovery_bench.py --skip-memory --data-dir /tmp/rb
    ../base/.venv/bin/python bench/recovery_bench.py --data-dir /tmp/rb --reopens 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

CHUNK = 1000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def key(i: int) -> bytes:
    return b"key:%08d" % i


def value(i: int) -> bytes:
    return b"value:%010d" % i  # 16 bytes


async def memory_per_key(keys: int) -> dict[str, float]:
    gc.collect()
    before = rss_bytes()
    engine = await MemoryEngine.open()
    lsn = 0
    for start in range(0, keys, CHUNK):
        lsn += 1
        # Distinct value objects, as decoding WAL entries produces (a shared constant would
        # hide the values' own cost).
        mutations = tuple(
            Mutation(MutationKind.PUT, key(i), value(i))
            for i in range(start, min(keys, start + CHUNK))
        )
        await engine.apply(WalEntry(lsn, 1, mutations))
    gc.collect()
    grown = rss_bytes() - before
    assert engine.key_count == keys
    await engine.close()
    return {
        "keys": keys,
        "rss_growth_mb": grown / 1e6,
        "bytes_per_key": grown / keys,
        "mb_per_million_keys": grown / keys * 1e6 / 1e6,
    }


def bench_config(engine: str, data_dir: Path) -> StoreConfig:
    return StoreConfig(
        data_dir=data_dir,
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.NEVER),
        ttl_sweep_interval_s=0,
        snapshot_wal_bytes=1 << 40,  # only the explicit snapshot below
    )


async def reopen_cpu_seconds(engine: str, keys: int, data_dir: Path) -> list[float]:
    """CPU seconds of ``Store.open`` on data a previous run left (``--data-dir``)."""
    started = time.process_time()
    store = await Store.open(bench_config(engine, data_dir))
    spent = time.process_time() - started
    assert store.key_count == keys, (store.key_count, keys)
    await store.close()
    return [round(spent, 3)]


async def recovery_time(engine: str, keys: int, wal_entries: int, data_dir: Path) -> dict:
    config = bench_config(engine, data_dir)
    store = await Store.open(config)
    started = time.perf_counter()
    for start in range(0, keys, CHUNK):
        await store.mput([(key(i), value(i)) for i in range(start, min(keys, start + CHUNK))])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    meta = await store.snapshot_now()
    snapshot_s = time.perf_counter() - started
    started = time.perf_counter()
    pending = []
    for i in range(wal_entries):
        pending.append(store.put(key(i * 7 % keys), b"after-snapshot-%d" % i))
        if len(pending) >= 256:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    tail_s = time.perf_counter() - started
    last_lsn = store.last_lsn
    await store.close()

    started, cpu_started = time.perf_counter(), time.process_time()
    reopened = await Store.open(config)
    open_s = time.perf_counter() - started
    # CPU seconds of this process (all its threads): what a loaded machine changes least.
    open_cpu_s = time.process_time() - cpu_started
    report = reopened.stats().recovery
    assert reopened.last_lsn == last_lsn, (reopened.last_lsn, last_lsn)
    assert reopened.key_count == keys
    await reopened.close()
    return {
        "engine": engine,
        "keys": keys,
        "wal_entries_after_snapshot": wal_entries,
        "load_seconds": round(load_s, 3),
        "snapshot_seconds": round(snapshot_s, 3),
        "snapshot_bytes": meta.path.stat().st_size,
        "tail_write_seconds": round(tail_s, 3),
        "recovery_seconds": round(open_s, 3),
        "recovery_cpu_seconds": round(open_cpu_s, 3),
        "replayed_entries": report.replayed_entries,
        "snapshot_lsn": report.snapshot_lsn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--wal-entries", type=int, default=100_000)
    parser.add_argument("--engine", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--data-dir", type=Path,
        help="keep the store here; when it exists, only reopen it (prints the CPU seconds of "
             "each open): an A/B runs this script with each side's interpreter on one data dir")
    parser.add_argument("--reopens", type=int, default=1, help="opens of an existing --data-dir")
    args = parser.parse_args()

    if args.data_dir is not None and args.data_dir.exists():
        opens = [asyncio.run(reopen_cpu_seconds(args.engine, args.keys, args.data_dir))[0]
                 for _ in range(args.reopens)]
        print(json.dumps({"reopen_cpu_seconds": opens}))
        return
    results: dict[str, object] = {}
    if not args.skip_memory:
        results["memory"] = asyncio.run(memory_per_key(args.keys))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="shardkv-recovery-bench-"))
    try:
        results["recovery"] = asyncio.run(
            recovery_time(args.engine, args.keys, args.wal_entries, data_dir)
        )
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    print(f"{'measurement':<44} {'value':>14}")
    if "memory" in results:
        mem = results["memory"]
        per_million = mem["mb_per_million_keys"]
        print(f"{'memory engine, RSS per key (bytes)':<44} {mem['bytes_per_key']:>14.1f}")
        print(f"{'memory engine, MB per million small keys':<44} {per_million:>14.1f}")
    rec = results["recovery"]
    for name in (
        "keys",
        "wal_entries_after_snapshot",
        "load_seconds",
        "snapshot_seconds",
        "snapshot_bytes",
        "recovery_seconds",
        "recovery_cpu_seconds",
        "replayed_entries",
    ):
        label = f"{rec['engine']} store, {name.replace('_', ' ')}"
        print(f"{label:<44} {rec[name]!s:>14}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

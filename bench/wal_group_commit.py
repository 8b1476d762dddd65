"""How well group commit groups: N concurrent appenders on one WAL with fsync=always.

Each appender loops: take the next LSN, ``append`` one entry (a put of a small value), wait
until it is durable. With one fdatasync per group, throughput should grow with concurrency
while the number of syncs stays far below the number of entries.

    .venv/bin/python bench/wal_group_commit.py [--writers 64] [--seconds 5] [--value-bytes 100]
        [--dir DIR] [--fsync always|interval|never]

Prints a table, then one line of JSON (for scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    syncs: list[tuple[float, int]] = []
    options = WalOptions(
        fsync=FsyncPolicy(args.fsync),
        on_sync=lambda seconds, entries, nbytes: syncs.append((seconds, entries)),
    )
    wal = await WriteAheadLog.open(directory, options)
    value = b"x" * args.value_bytes
    next_lsn = wal.last_lsn + 1
    latencies: list[float] = []
    deadline = time.monotonic() + args.seconds

    async def appender(worker: int) -> None:
        nonlocal next_lsn
        key = b"bench:%d" % worker
        while time.monotonic() < deadline:
            lsn, next_lsn = next_lsn, next_lsn + 1  # no await between: LSNs stay in call order
            started = time.perf_counter()
            await wal.append(WalEntry(lsn, 1, (Mutation(MutationKind.PUT, key, value),)))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(appender(w) for w in range(args.writers)))
    elapsed = time.perf_counter() - started
    stats = wal.stats()
    await wal.close()
    groups = [entries for _, entries in syncs]
    sync_times = [seconds for seconds, _ in syncs]
    return {
        "writers": args.writers,
        "fsync": args.fsync,
        "value_bytes": args.value_bytes,
        "seconds": round(elapsed, 3),
        "entries": stats.appended_entries,
        "entries_per_s": round(stats.appended_entries / elapsed, 1),
        "syncs": stats.syncs,
        "group_mean": round(statistics.fmean(groups), 2) if groups else 0.0,
        "group_max": stats.max_group_size,
        "fsync_p50_ms": round(percentile(sync_times, 0.50) * 1000, 3),
        "fsync_p99_ms": round(percentile(sync_times, 0.99) * 1000, 3),
        "append_p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "append_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsync", choices=[p.value for p in FsyncPolicy], default="always")
    parser.add_argument("--dir", type=Path, help="WAL directory (default: a fresh temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        result = asyncio.run(run(args, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="walbench-") as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

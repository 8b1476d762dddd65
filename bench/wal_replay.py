"""What recovery costs on the WAL side: open (check every segment) and read every entry back.

    .venv/bin/python -m bench.wal_replay [--entries 500000] [--value-bytes 80] [--dir DIR]

Writes the log first (fsync=never: the writing is not what is measured here), then reports
wall and CPU seconds to open it, to read all of it, and to read its last 10 entries (a
replica that is nearly caught up), then one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog

from bench.flat_results import print_flat_results


class _Clock:
    def __init__(self, results: dict[str, Any], name: str) -> None:
        self.results, self.name = results, name

    def __enter__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *_: object) -> None:
        self.results[f"{self.name}_s"] = round(time.perf_counter() - self.wall, 4)
        self.results[f"{self.name}_cpu_s"] = round(time.process_time() - self.cpu, 4)


async def run(entries: int, value_bytes: int, directory: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"entries": entries, "value_bytes": value_bytes}
    wal = await WriteAheadLog.open(directory, WalOptions(fsync=FsyncPolicy.NEVER))
    value = b"v" * value_bytes
    for start in range(1, entries + 1, 10_000):
        batch = range(start, min(start + 10_000, entries + 1))
        await wal.append_many(
            [WalEntry(i, 1, (Mutation(MutationKind.PUT, b"k%d" % i, value),)) for i in batch]
        )
    stats = wal.stats()
    results["segments"], results["wal_mb"] = stats.segments, round(stats.bytes / 1e6, 1)
    await wal.close()
    with _Clock(results, "open"):
        wal = await WriteAheadLog.open(directory)
    with _Clock(results, "read_all"):
        count = sum(1 for _ in wal.read_from(1))
    with _Clock(results, "read_tail"):
        tail = list(wal.read_from(entries - 9))
    await wal.close()
    assert count == entries and len(tail) == 10
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=80)
    parser.add_argument("--dir", type=Path, help="WAL directory (default: a fresh temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        results = asyncio.run(run(args.entries, args.value_bytes, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="walreplay-") as tmp:
            results = asyncio.run(run(args.entries, args.value_bytes, Path(tmp)))
    print_flat_results(results)


if __name__ == "__main__":
    main()

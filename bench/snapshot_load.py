"""Snapshot files at scale: write, checksum-verify and read back N small keys.

    .venv/bin/python -m bench.snapshot_load [--keys 1000000] [--value-bytes 16] [--dir DIR]

Reports wall and CPU seconds for each phase (on a shared machine, CPU seconds are the figure
that does not depend on the neighbours), then one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shardkv.node.storage.snapshots.snapshot import (
    SnapshotItem,
    check_snapshot,
    read_snapshot,
    write_snapshot,
)

from bench.flat_results import print_flat_results


async def _items(keys: int, value: bytes) -> AsyncIterator[SnapshotItem]:
    for i in range(keys):
        yield (b"user:%010d" % i, value, False, i + 1, None if i % 4 else 1.9e9 + i)


def _timed(results: dict[str, Any], name: str, wall: float, cpu: float) -> None:
    results[f"{name}_s"] = round(time.perf_counter() - wall, 3)
    results[f"{name}_cpu_s"] = round(time.process_time() - cpu, 3)


async def run(keys: int, value_bytes: int, directory: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"keys": keys, "value_bytes": value_bytes}
    wall, cpu = time.perf_counter(), time.process_time()
    meta = await write_snapshot(directory, keys, 1, _items(keys, b"v" * value_bytes))
    _timed(results, "write", wall, cpu)
    results["file_mb"] = round(meta.path.stat().st_size / 1e6, 2)
    wall, cpu = time.perf_counter(), time.process_time()
    check_snapshot(meta.path)
    _timed(results, "verify", wall, cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in read_snapshot(meta.path))
    _timed(results, "read", wall, cpu)
    assert count == keys
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=16)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    if args.dir is not None:
        results = asyncio.run(run(args.keys, args.value_bytes, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="snapbench-") as tmp:
            results = asyncio.run(run(args.keys, args.value_bytes, Path(tmp)))
    print_flat_results(results)


if __name__ == "__main__":
    main()

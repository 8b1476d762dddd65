"""How long a small write + fdatasync takes on a filesystem, appending vs overwriting a
preallocated file: the floor under every fsync=always write, and why WALs preallocate.

    python -m bench.fsync_probe --dir /var/lib/shardkv     # the filesystem of a data dir

Appending grows the file, so each fdatasync must also commit the new size (on ext4 a journal
commit); overwriting space allocated up front (``posix_fallocate``, as etcd does for its 64 MiB
WAL segments) syncs only the data. The probe alternates blocks of both, so that noise from
other work on the machine falls on both alike, and prints percentiles (or JSON with
``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

BLOCK = 200  # writes per block; blocks of the two modes alternate


def _block(directory: str, preallocated: bool, write_bytes: int, writes: int) -> list[float]:
    fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=directory)
    try:
        if preallocated:
            os.posix_fallocate(fd, 0, writes * write_bytes)
            os.fsync(fd)
        payload = os.urandom(write_bytes)
        seconds = []
        for i in range(writes):
            os.pwrite(fd, payload, i * write_bytes)
            started = time.perf_counter()
            os.fdatasync(fd)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        os.close(fd)
        os.unlink(path)


def _figures(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    n = len(ordered)
    return {
        "count": n,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "p50_ms": ordered[n // 2] * 1000,
        "p90_ms": ordered[min(n - 1, int(n * 0.90))] * 1000,
        "p99_ms": ordered[min(n - 1, int(n * 0.99))] * 1000,
    }


def probe(
    directory: str, *, blocks: int = 5, write_bytes: int = 300, block_writes: int = BLOCK
) -> dict[str, dict[str, float]]:
    """fdatasync latencies of ``blocks`` x ``block_writes`` writes of ``write_bytes`` in each
    mode."""
    found: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(blocks):
        for preallocated in (False, True):
            found[preallocated] += _block(directory, preallocated, write_bytes, block_writes)
    return {"appending": _figures(found[False]), "preallocated": _figures(found[True])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsync_probe", description=__doc__)
    parser.add_argument("--dir", default=".", help="a directory on the filesystem to probe")
    parser.add_argument("--blocks", type=int, default=5, help="blocks of 200 writes per mode")
    parser.add_argument("--bytes", type=int, default=300, help="bytes per write (one record)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = probe(args.dir, blocks=args.blocks, write_bytes=args.bytes)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for mode, f in result.items():
        print(
            f"{mode:>12}: n={f['count']:.0f}  mean {f['mean_ms']:.3f} ms  p50 {f['p50_ms']:.3f}"
            f"  p90 {f['p90_ms']:.3f}  p99 {f['p99_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long a write waits to learn the version it replaces, and how many engine reads that
takes, under concurrent writes to one Store (no network): the hazard of issue 12's
follow-up, where on SQLite that read started over whenever an entry was applied meanwhile.

    python -m bench.preread_probe --engine sqlite --writers 64 --seconds 5
    python -m bench.preread_probe --json out.json       # the JSON too ('-': stdout)

``writers`` coroutines each put a random key of ``--keys`` (preloaded) in a closed loop for
``--seconds``; the probe times ``CommitPipeline.live_versions`` (the blind put's pre-read)
and counts the engine reads under it, by wrapping them on the running Store (it measures any
checkout whose Store has those, so another checkout's interpreter can run it for an
A/B: ``cd`` here, ``OTHER/.venv/bin/python -m bench.preread_probe``). Prints a table and,
with ``--json``, the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

from bench.loadgen import percentile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.preread_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--fsync", choices=("always", "never"), default="never")
    parser.add_argument("--writers", type=int, default=64, help="concurrent writers (64)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds (5)")
    parser.add_argument("--keys", type=int, default=10_000, help="key space, preloaded (10000)")
    parser.add_argument("--value-size", type=int, default=256)
    parser.add_argument("--json", dest="json_path", help="write the JSON here ('-': stdout)")
    return parser


async def probe(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config = StoreConfig(data_dir=directory, engine=args.engine, ttl_sweep_interval_s=0,
                         wal=WalOptions(fsync=FsyncPolicy(args.fsync)))
    store = await Store.open(config)
    keys = [b"bench:%08d" % i for i in range(args.keys)]
    value = os.urandom(args.value_size)
    for start in range(0, len(keys), 100):
        await store.mput([(k, value) for k in keys[start:start + 100]])
    pipeline, engine = store._pipeline, store._engine  # the seams this probe times
    # The engine reads of the pre-read running in this task (writers overlap: a global
    # count would add the others' reads).
    reads: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("reads",
                                                                              default=None)
    preread_ms: list[float] = []
    rounds: list[int] = []
    put_ms: list[float] = []
    measuring = False

    def counting(method: Any) -> Any:
        async def wrapped(*a: Any, **kw: Any) -> Any:
            counter = reads.get()
            if counter is not None:
                counter[0] += 1
            return await method(*a, **kw)
        return wrapped

    engine.get = counting(engine.get)  # type: ignore[method-assign]
    engine.get_many = counting(engine.get_many)  # type: ignore[method-assign]
    live_versions = pipeline.live_versions

    async def timed_live_versions(keys_: Sequence[bytes], now: float) -> list[int | None]:
        counter = [0]
        token = reads.set(counter)
        started = time.perf_counter()
        try:
            return await live_versions(keys_, now)
        finally:
            reads.reset(token)
            if measuring:
                preread_ms.append((time.perf_counter() - started) * 1e3)
                rounds.append(counter[0])

    pipeline.live_versions = timed_live_versions  # type: ignore[method-assign]

    async def writer(stop: float) -> None:
        rng = random.Random()
        while time.monotonic() < stop:
            started = time.perf_counter()
            await store.put(rng.choice(keys), value)
            if measuring:
                put_ms.append((time.perf_counter() - started) * 1e3)

    try:
        warm = time.monotonic() + 1.0
        await asyncio.gather(*[writer(warm) for _ in range(args.writers)])
        measuring = True
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*[writer(wall + args.seconds) for _ in range(args.writers)])
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await store.close()
    put_ms.sort()
    preread_ms.sort()
    return {
        "puts_per_s": len(put_ms) / wall,
        "cpu_us_per_put": cpu * 1e6 / max(1, len(put_ms)),
        "put_p50_ms": percentile(put_ms, 0.50), "put_p99_ms": percentile(put_ms, 0.99),
        "put_max_ms": max(put_ms, default=0.0),
        "preread_p50_ms": percentile(preread_ms, 0.50),
        "preread_p99_ms": percentile(preread_ms, 0.99),
        "preread_max_ms": max(preread_ms, default=0.0),
        "reads_per_preread_mean": statistics.fmean(rounds) if rounds else 0.0,
        "reads_per_preread_max": max(rounds, default=0),
        "prereads": len(rounds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shardkv-preread-") as temp:
        started = time.time()
        figures = asyncio.run(probe(args, Path(temp)))
    document = {
        "benchmark": "preread_probe",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": " ".join(["python", "-m", "bench.preread_probe", *sys.argv[1:]]),
        "loadavg": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "json_path"},
        "figures": figures,
    }
    human = sys.stderr if args.json_path == "-" else sys.stdout
    for name, figure in figures.items():
        print(f"{name:24s} {figure:12.2f}", file=human)
    if args.json_path == "-":
        print(json.dumps(document, indent=2))
    elif args.json_path:
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

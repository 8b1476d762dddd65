"""The node's own CPU per operation without the network: the operation layer and the Store.

    python -m bench.hot_path_bench                      # this checkout, 5 rounds
    python -m bench.hot_path_bench --b-python ../base/.venv/bin/python   # A/B, alternated

Each round is a fresh process (``--child``) that opens a Store (memory engine, ``fsync
never``: the fsync is the disk's cost, not the code's) in a temporary directory and runs each
operation ``--ops`` times through ``execute`` (the function REST and ``/v1/rpc`` both call) at
``--concurrency`` in flight, timing ``time.process_time``: CPU seconds of this process, so a
busy machine changes the figure far less than it changes wall-clock rates. The operations:
``get``, ``put`` (blind), ``put+session`` (stamped for exactly-once, a new ``seq`` each
time), ``cas`` (put with ``if_version``). The child imports only ``shardkv``, so run with
another checkout's interpreter it measures that checkout's code: that is the A/B.

What it leaves out is what ``bench/cost_bench.py`` measures: HTTP/WebSocket parsing, the event
loop's socket work, the replication stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPS = ("get", "put", "put+session", "cas")


async def _child(ops: int, concurrency: int) -> dict[str, float]:
    from shardkv.node.api.node_context import NodeContext
    from shardkv.node.api.operations import OPERATIONS, execute
    from shardkv.node.storage.store import Store, StoreConfig
    from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

    value = b"v" * 256
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="shardkv-hot-") as temp:
        store = await Store.open(StoreConfig(data_dir=Path(temp), wal=WalOptions(
            fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0))
        ctx = NodeContext(store=store)
        keys = [b"bench:%08d" % i for i in range(10_000)]
        for start in range(0, len(keys), 100):
            await store.mput([(k, value) for k in keys[start:start + 100]])
        seqs = [0] * concurrency

        def args_of(op: str, worker: int, i: int) -> tuple[str, dict[str, Any]]:
            key = keys[(worker * 7919 + i * 31) % len(keys)]
            if op == "get":
                return "get", {"key": key}
            if op == "put":
                return "put", {"key": key, "value": value}
            if op == "put+session":
                seqs[worker] += 1
                return "put", {"key": key, "value": value, "client_id": b"c-%d" % worker,
                               "seq": seqs[worker]}
            return "put", {"key": b"cas-%d" % worker, "value": value}

        async def run(op: str, count: int) -> None:
            async def worker(w: int) -> None:
                version = None
                for i in range(count // concurrency):
                    name, args = args_of(op, w, i)
                    if op == "cas" and version is not None:
                        args["if_version"] = version
                    answer = await execute(ctx, OPERATIONS[name], args)
                    if op == "cas":
                        version = answer["version"]
            await asyncio.gather(*(worker(w) for w in range(concurrency)))

        for op in OPS:
            await run(op, min(ops, 2000))  # warm-up
            started = time.process_time()
            await run(op, ops)
            results[op] = (time.process_time() - started) * 1e6 / (ops // concurrency
                                                                    * concurrency)
        await store.close()
    return results


def _round(python: str, ops: int, concurrency: int) -> dict[str, float]:
    argv = [python, str(Path(__file__).resolve()), "--child", "--ops", str(ops),
            "--concurrency", str(concurrency)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": ""})
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hot_path_bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ops", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--b-python", help="B runs this interpreter (another checkout's venv)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_child(args.ops, args.concurrency))))
        return 0
    sides = {"A": sys.executable} | ({"B": args.b_python} if args.b_python else {})
    samples: dict[str, dict[str, list[float]]] = {s: {op: [] for op in OPS} for s in sides}
    for round_no in range(args.rounds):
        order = list(sides) if round_no % 2 == 0 else list(sides)[::-1]
        for side in order:
            for op, us in _round(sides[side], args.ops, args.concurrency).items():
                samples[side][op].append(us)
            print(f"round {round_no + 1} {side}: " + ", ".join(
                f"{op} {samples[side][op][-1]:.1f}" for op in OPS) +
                f" us/op (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {"command": " ".join(["python", "-m", "bench.hot_path_bench",
                                                    *(argv or sys.argv[1:])]),
                               "sides": sides, "samples": samples, "medians": {}}
    print(f"{'op':<12}" + "".join(f"{side + ' us/op (range)':>28}" for side in sides)
          + ("   A/B" if len(sides) == 2 else ""))
    for op in OPS:
        line = f"{op:<12}"
        for side in sides:
            values = samples[side][op]
            median = statistics.median(values)
            summary["medians"].setdefault(side, {})[op] = median
            line += f"{f'{median:.1f} ({min(values):.1f}..{max(values):.1f})':>28}"
        if len(sides) == 2:
            line += f"   {summary['medians']['A'][op] / summary['medians']['B'][op]:.3f}"
        print(line)
    for side in sides:
        put, stamped = summary["medians"][side]["put"], summary["medians"][side]["put+session"]
        print(f"{side}: exactly-once costs {stamped - put:.1f} us per put "
              f"({(stamped / put - 1) * 100:.0f}% of the Store-level put)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

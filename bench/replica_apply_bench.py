"""A replica's CPU per replicated entry on its Store path: decode a frame, order, log, apply.

    python -m bench.replica_apply_bench                                   # this checkout
    python -m bench.replica_apply_bench --b-python ../base/.venv/bin/python --rounds 3

What a replica of the 2x3 cluster does with each ENTRIES frame its primary sends, without the
socket and the disk: a Store (memory engine, ``fsync never``) is fed ``--frames`` frames of
``--per-frame`` entries, each a put of a 100-byte value and its session record (the shape the
client library's stamped puts have), decoded as the replica decodes them and handed to
``StoreReplicaTarget.append``. Timed with ``time.process_time`` over the last two thirds, so
a busy machine moves it less than it moves rates. Each round is a fresh process that imports
only ``shardkv``, so with another checkout's interpreter it measures that checkout's code
(the B side), alternated round by round. Issue 17, docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


async def _child(per_frame: int, frames: int) -> float:
    from shardkv.node.replication import protocol as proto
    from shardkv.node.replication.replica_log import StoreReplicaTarget
    from shardkv.node.storage.sessions import SESSION_PREFIX, Outcome, encode_record
    from shardkv.node.storage.store import Store, StoreConfig
    from shardkv.node.wal.model import WalOptions
    from shardkv.node.wal.record import Mutation, MutationKind, WalEntry

    decode = getattr(proto, "decode_stream", proto.decode)  # older checkouts: decode
    with tempfile.TemporaryDirectory(prefix="shardkv-replica-") as temp:
        store = await Store.open(StoreConfig(Path(temp), wal=WalOptions(fsync="never"),
                                             ttl_sweep_interval_s=0))
        target = StoreReplicaTarget(store)
        lsn = store.last_lsn
        encoded = []
        for _ in range(frames):
            entries = []
            for _ in range(per_frame):
                lsn += 1
                key = b"bench:%06d" % (lsn * 7919 % 10_000)
                session = SESSION_PREFIX + b"c" * 12 + (lsn % 64).to_bytes(4, "big")
                record = encode_record(lsn, Outcome(), time.time())
                entries.append(WalEntry(lsn, 1, (
                    Mutation(MutationKind.PUT, key, b"v" * 100, False, None, False, lsn - 1),
                    Mutation(MutationKind.PUT, session, record)), time.time()))
            encoded.append(proto.encode_entries(entries, lsn, time.time(), None, lsn, None))
        warm = frames // 3
        for frame in encoded[:warm]:
            await target.append(proto.decode_entries(decode(frame)))
        started = time.process_time()
        for frame in encoded[warm:]:
            await target.append(proto.decode_entries(decode(frame)))
        used = time.process_time() - started
        await store.close()
    return used * 1e6 / ((frames - warm) * per_frame)


def _round(python: str, args: argparse.Namespace) -> float:
    argv = [python, str(Path(__file__).resolve()), "--child", "--per-frame",
            str(args.per_frame), "--frames", str(args.frames)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=tempfile.gettempdir())
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replica_apply_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-frame", type=int, default=12)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--b-python", help="B runs this interpreter (another checkout's venv)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_child(args.per_frame, args.frames))))
        return 0
    sides = {"A": sys.executable}
    if args.b_python:
        sides["B"] = args.b_python
    from bench.ab_rounds import alternate, report

    figures = alternate(sides, args.rounds, lambda python: _round(python, args),
                        lambda us: f"{us:.1f} us/entry")
    report(figures, "us/entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())

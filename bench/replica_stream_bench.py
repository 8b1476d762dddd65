"""A replica's CPU per entry following a real primary's stream over a real socket.

    python -m bench.replica_stream_bench                                     # this checkout
    python -m bench.replica_stream_bench --b-python ../base/.venv/bin/python --rounds 4

``replica_apply_bench`` times the Store path alone; this times everything a replica of the
2x3 cluster does per entry: aiohttp's receive of the frame, its decoding, ``Replica._handle``,
the WAL group (``--fsync``, default ``always`` as the goal's cluster runs), the apply, the
ack, lease grants and the watch hub's callbacks, and the loop's wake-ups. Two processes per
round, both run by the side's interpreter (so with another checkout's venv they measure that
checkout's code): a primary (WAL with ``fsync never``, memory engine, ``ReplicationPrimary``
on 127.0.0.1) that keeps ``--writers`` puts in flight, each waiting for a majority of
("p", "r1", "r2") as the Store's commit gate does, and a replica (a Store, memory engine,
``ReplicationReplica`` with a lease promise) whose own process CPU (``getrusage``: user and
system) is taken over the entries after the first third. Sides alternate round by round.
Issue 17, notes/issue-17-replica.md.

The primary prints its own process CPU per committed entry too (``--measure primary`` makes
it the A/B figure): the WAL (no fsync), ``ReplicationPrimary``'s sender, acks and majority
wait, with one replica following (a majority of three), without the rpc layer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _usage() -> tuple[float, float, int]:
    """User and system CPU seconds, and context switches, of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


async def _primary(writers: int, total: int) -> None:
    """Serve the stream and write ``total`` entries with ``writers`` in flight; print the
    port, then the frames and entries sent once done."""
    from aiohttp import web
    from shardkv.node.replication import protocol as proto
    from shardkv.node.replication.primary import ReplicationPrimary
    from shardkv.node.storage.sessions import SESSION_PREFIX, Outcome, encode_record
    from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
    from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog

    with tempfile.TemporaryDirectory(prefix="shardkv-stream-primary-") as temp:
        wal = await WriteAheadLog.open(Path(temp) / "wal", WalOptions(fsync=FsyncPolicy.NEVER))

        async def no_snapshot() -> None:
            raise RuntimeError("the benchmark's replica starts empty")

        repl = ReplicationPrimary(wal, node_id="p", epoch=lambda: 1,
                                  members=lambda: ("p", "r1", "r2"),
                                  snapshot_source=no_snapshot,  # type: ignore[arg-type]
                                  on_grant=lambda node, at: None)
        app = web.Application()
        app.add_routes([web.get(proto.PATH, repl.serve)])
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        written = 0
        warm = total // 3
        start: tuple[float, float, int] | None = None
        committed = 0  # entries a majority holds, counted after ``warm``

        async def writer() -> None:
            nonlocal written, start, committed
            while written < total:
                written += 1
                if written == warm:
                    start = _usage()
                lsn = wal.last_lsn + 1
                key = b"bench:%06d" % (lsn * 7919 % 10_000)
                session = SESSION_PREFIX + b"c" * 12 + (lsn % 64).to_bytes(4, "big")
                entry = WalEntry(lsn, 1, (
                    Mutation(MutationKind.PUT, key, b"v" * 100, False, None, False, lsn - 1),
                    Mutation(MutationKind.PUT, session, encode_record(lsn, Outcome(),
                                                                     time.time()))),
                    time.time())
                durable = wal.append_nowait(entry)
                repl.publish(entry)
                await durable
                repl.local_durable(lsn)
                await repl.wait_for_majority(lsn, None)
                if start is not None:
                    committed += 1

        await asyncio.gather(*(writer() for _ in range(writers)))
        end = _usage()
        [progress] = repl.replicas() or [{}]
        cpu = 0.0 if start is None else (end[0] - start[0]) + (end[1] - start[1])
        print(json.dumps({"frames": progress.get("frames_sent"),
                          "entries": progress.get("entries_sent"),
                          "primary_us_per_entry": cpu * 1e6 / max(1, committed)}),
              flush=True)
        await repl.close()
        await runner.cleanup()
        await wal.close()


async def _replica(url: str, total: int, fsync: str) -> dict[str, float]:
    from shardkv.node.replication.majority_lease import LeasePromise
    from shardkv.node.replication.replica import ReplicationReplica
    from shardkv.node.replication.replica_log import StoreReplicaTarget
    from shardkv.node.storage.store import Store, StoreConfig
    from shardkv.node.wal.model import WalOptions

    with tempfile.TemporaryDirectory(prefix="shardkv-stream-replica-") as temp:
        store = await Store.open(StoreConfig(Path(temp), wal=WalOptions(fsync=fsync),
                                             ttl_sweep_interval_s=0))
        replica = ReplicationReplica(StoreReplicaTarget(store), node_id="r1",
                                     primary_url=url, epoch=1, promise=LeasePromise(2.0))
        replica.on_commit = store.watch_hub.commit
        replica.on_ring = store.watch_hub.saw_primary_ring
        replica.start()
        warm = total // 3
        # Polled, 20 times a second: a callback on every apply would add to what is measured.
        while store.applied_lsn < warm:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        lsn0, use0, wall0 = store.applied_lsn, _usage(), time.monotonic()
        while store.applied_lsn < total:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        lsn1, use1, wall1 = store.applied_lsn, _usage(), time.monotonic()
        await replica.stop()
        await store.close()
    entries = lsn1 - lsn0
    user, system, switches = (b - a for a, b in zip(use0, use1, strict=True))
    return {"us_per_entry": (user + system) * 1e6 / entries,
            "sys_us_per_entry": system * 1e6 / entries,
            "switches_per_entry": switches / entries,
            "entries_per_s": entries / (wall1 - wall0)}


def _round(python: str, args: argparse.Namespace) -> dict[str, float]:
    script = str(Path(__file__).resolve())
    common = ["--entries", str(args.entries)]
    primary = subprocess.Popen(
        [python, script, "--role", "primary", "--writers", str(args.writers), *common],
        stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    try:
        assert primary.stdout is not None
        port = json.loads(primary.stdout.readline())["port"]
        done = subprocess.run(
            [python, script, "--role", "replica", "--url", f"http://127.0.0.1:{port}",
             "--fsync", args.fsync, *common],
            capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
        result = json.loads(done.stdout.strip().splitlines()[-1])
        sent = json.loads(primary.stdout.readline() or "{}")
        if sent.get("frames"):
            result["entries_per_frame"] = sent["entries"] / sent["frames"]
        if "primary_us_per_entry" in sent:
            result["primary_us_per_entry"] = sent["primary_us_per_entry"]
        primary.wait(timeout=30)
        return result
    finally:
        if primary.poll() is None:
            primary.kill()
            primary.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replica_stream_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--entries", type=int, default=60_000)
    p.add_argument("--writers", type=int, default=12,
                   help="puts in flight on the primary (12: the cluster's ~11 entries a frame)")
    p.add_argument("--fsync", choices=("always", "never"), default="always",
                   help="the replica's WAL policy")
    p.add_argument("--b-python", help="B runs this interpreter (another checkout's venv)")
    p.add_argument("--measure", choices=("replica", "primary"), default="replica",
                   help="whose CPU per entry the A/B compares (both are printed)")
    p.add_argument("--role", choices=("primary", "replica"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role is not None:
        from shardkv.cluster import event_loop  # uvloop, as every node runs

        if args.role == "primary":
            event_loop.run(_primary(args.writers, args.entries))
        else:
            print(json.dumps(event_loop.run(_replica(args.url, args.entries, args.fsync))))
        return 0
    sides = {"A": sys.executable}
    if args.b_python:
        sides["B"] = args.b_python
    from bench.ab_rounds import alternate, report

    def run(python: str) -> float:
        result = _round(python, args)
        print(f"  {result['us_per_entry']:.1f} us/entry (sys {result['sys_us_per_entry']:.1f}), "
              f"{result['switches_per_entry']:.3f} switches/entry, "
              f"{result['entries_per_s']:.0f} entries/s, "
              f"{result.get('entries_per_frame', 0):.1f} entries/frame, primary "
              f"{result.get('primary_us_per_entry', float('nan')):.1f} us/entry", flush=True)
        return result["us_per_entry" if args.measure == "replica" else "primary_us_per_entry"]

    report(alternate(sides, args.rounds, run, lambda us: f"{us:.1f} us/entry"), "us/entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())

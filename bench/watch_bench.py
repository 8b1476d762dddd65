"""Watch fan-out: 1 writer, W watchers of one prefix, against etcd's watch in the same run.

Each system runs alone on this machine in turn, in alternating rounds (shardkv, etcd,
shardkv, etcd, ...), each round on a fresh server: a standalone shardkv node (``--fsync
always``) and a one-member etcd (fsync on every commit), so a write is durable on both when
it is acknowledged. One writer (this process) puts N keys under the prefix one after
another; the W watchers (shardkv: ``/v1/watch`` WebSockets with binary msgpack frames; etcd:
its HTTP/JSON gateway's ``/v3/watch`` streams) are spread over ``--processes`` forked
watcher processes (bench/watch_streams.py) and each receives every event.

Figures per round: events/s delivered (W * N events over the time from the first write to
the last event received), latency from the write's acknowledgement to each event (p50/p99;
an event that arrives before its acknowledgement counts 0, and the share of those is
reported), latency from the write's send, the writer's puts/s, and CPU in cores over the
run of the watcher processes, the writer and the server, and the server's and watchers' CPU
microseconds per event delivered. Per system: the median of each figure over the rounds and
its range; the shardkv/etcd ratios of the medians. The one writer paces the run: while the
watchers keep up, events/s is W times the writer's puts/s (an fsynced put each), so a
system that acknowledges puts faster also delivers more events.

    nice python -m bench.watch_bench --watchers 1000 --processes 4 --writes 300 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.etcd_reference import EtcdGatewayClient, etcd_binary, etcd_member
from bench.forked_workers import expect, forked_workers
from bench.proc_stats import process_cpu_seconds
from bench.profiler import profiled, py_spy_binary
from bench.server_process import ServerProcess
from bench.shardkv_node import shardkv_node
from bench.watch_streams import PREFIX, watcher_process

READY_TIMEOUT_S = 60.0
WHO = "a watcher process"


def shares(watchers: int, processes: int) -> list[int]:
    """``watchers`` split as evenly as possible over at most ``processes`` processes."""
    count = max(1, min(processes, watchers))
    return [watchers // count + (i < watchers % count) for i in range(count)]


def percentiles(samples: list[float]) -> dict[str, float] | None:
    """p50 and p99 in ms (inclusive quantiles), None for fewer than two samples."""
    if len(samples) < 2:
        return None
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(q[49] * 1000, 3), "p99": round(q[98] * 1000, 3)}


def round_report(sent: list[float], acked: list[float],
                 arrivals: list[tuple[list[int], list[float]]]) -> dict[str, Any]:
    """One round's figures from the writer's times and each watcher process's arrivals."""
    after_ack: list[float] = []
    after_send: list[float] = []
    early = 0
    last = sent[0]
    for indexes, times in arrivals:
        for index, at in zip(indexes, times, strict=True):
            last = max(last, at)
            after_send.append(at - sent[index])
            lag = at - acked[index]
            early += lag < 0
            after_ack.append(max(0.0, lag))
    total = len(after_ack)
    return {
        "events": total,
        "events_per_s": round(total / (last - sent[0]), 1) if total and last > sent[0] else 0.0,
        "ack_to_event_ms": percentiles(after_ack),
        "send_to_event_ms": percentiles(after_send),
        "before_ack_share": round(early / total, 3) if total else None,
        "write_ops_per_s": round(len(acked) / (acked[-1] - sent[0]), 1),
        "elapsed_s": round(last - sent[0], 3),
    }


@contextmanager
def watcher_processes(system: str, url: str, watchers: int, processes: int,
                      writes: int) -> Iterator[list[Connection]]:
    """Forked watcher processes, yielded once every watch is created; always reaped."""
    arguments = [(system, url, share, writes) for share in shares(watchers, processes)]
    with forked_workers(watcher_process, arguments, "watchers") as channels:
        for channel in channels:
            expect(channel, "ready", READY_TIMEOUT_S, who=WHO)
        yield channels


def _collect(channels: list[Connection], within: float) -> list[dict[str, Any]]:
    """Every process's report: complete ones as they come; after ``within`` seconds, the
    others are told to stop and report what they have."""
    deadline = time.monotonic() + within
    reports: list[dict[str, Any] | None] = [None] * len(channels)
    for n, channel in enumerate(channels):
        if channel.poll(max(0.0, deadline - time.monotonic())):
            reports[n] = expect(channel, "done", 0, who=WHO)
    for n, channel in enumerate(channels):
        if reports[n] is None:
            channel.send(("stop",))
            reports[n] = expect(channel, "done", 30, who=WHO)
    return [r for r in reports if r is not None]


async def _paced(i: int, start: float, rate: float) -> None:
    """With a rate, put ``i`` waits for its slot (``start + i / rate``): both systems then see
    the same event rate, and latencies compare at equal load rather than at each one's
    fastest (at 1,000 watchers the faster server otherwise swamps the watcher processes)."""
    if rate > 0:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _write(system: str, url: str, writes: int,
                 rate: float = 0.0) -> tuple[list[float], list[float]]:
    """The single writer: N puts one after another (``rate`` puts/s at most, 0 = as fast as
    acknowledged); send and ack times (monotonic)."""
    sent, acked = [0.0] * writes, [0.0] * writes
    if system == "shardkv":
        from shardkv.client import Client

        async with Client(nodes=[url], exactly_once=False) as kv:
            await kv.put(b"warm-up", b"x")  # connect outside the timed writes
            start = time.monotonic()
            for i in range(writes):
                await _paced(i, start, rate)
                sent[i] = time.monotonic()
                await kv.put(PREFIX + f"{i % 100:03d}".encode(), str(i).encode())
                acked[i] = time.monotonic()
        return sent, acked
    etcd = EtcdGatewayClient(url, aiohttp.ClientSession())
    try:
        await etcd.put(b"warm-up", b"x")
        start = time.monotonic()
        for i in range(writes):
            await _paced(i, start, rate)
            sent[i] = time.monotonic()
            await etcd.put(PREFIX + f"{i % 100:03d}".encode(), str(i).encode())
            acked[i] = time.monotonic()
    finally:
        await etcd.close()
    return sent, acked


def run_round(system: str, server: ServerProcess, args: argparse.Namespace,
              profile: Path | None = None) -> dict[str, Any]:
    """One round against a started server: watches, writes, arrivals, CPU; with
    ``profile``, py-spy's raw samples of the server for ``--profile-seconds`` from the first
    write (``python -m bench.profile_summary`` reads them)."""
    with watcher_processes(system, server.url, args.watchers, args.processes,
                           args.writes) as channels, ExitStack() as spy:
        problems: list[str] = []
        if profile is not None:
            problems = spy.enter_context(profiled(server.pid, profile, args.profile_seconds,
                                                  fmt="raw"))
        server_cpu = process_cpu_seconds(server.pid)
        writer_cpu, wall = time.process_time(), time.monotonic()
        sent, acked = asyncio.run(_write(system, server.url, args.writes, args.rate))
        writer_cpu = time.process_time() - writer_cpu
        reports = _collect(channels, args.timeout)
        wall = time.monotonic() - wall
        server_cpu = process_cpu_seconds(server.pid) - server_cpu
    report = round_report(sent, acked, [(list(r["index"]), list(r["at"])) for r in reports])
    report["expected_events"] = args.watchers * args.writes
    report["watcher_cpu_cores"] = round(sum(r["cpu_s"] for r in reports) / wall, 3)
    report["writer_cpu_cores"] = round(writer_cpu / wall, 3)
    report["server_cpu_cores"] = round(server_cpu / wall, 3)
    # CPU per event delivered: what one event costs, which a busy machine disturbs far less
    # than it disturbs rates and latencies.
    events = max(1, report["events"])
    report["server_cpu_us_per_event"] = round(server_cpu / events * 1e6, 1)
    report["watcher_cpu_us_per_event"] = round(sum(r["cpu_s"] for r in reports) / events * 1e6, 1)
    if problems:
        report["profile_problems"] = problems
    return report


FIGURES = {  # name in the summary -> path in a round's report
    "events_per_s": ("events_per_s",),
    "ack_p50_ms": ("ack_to_event_ms", "p50"),
    "ack_p99_ms": ("ack_to_event_ms", "p99"),
    "send_p99_ms": ("send_to_event_ms", "p99"),
    "write_ops_per_s": ("write_ops_per_s",),
    "watcher_cpu_cores": ("watcher_cpu_cores",),
    "writer_cpu_cores": ("writer_cpu_cores",),
    "server_cpu_cores": ("server_cpu_cores",),
    "server_cpu_us_per_event": ("server_cpu_us_per_event",),
    "watcher_cpu_us_per_event": ("watcher_cpu_us_per_event",),
}


def _figure(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = report
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: each figure's median over the rounds and its [min, max]."""
    out: dict[str, dict[str, Any]] = {}
    for system in dict.fromkeys(r["system"] for r in rounds):
        mine = [r for r in rounds if r["system"] == system]
        row: dict[str, Any] = {"rounds": len(mine),
                               "events_complete": all(r["events"] == r["expected_events"]
                                                      for r in mine)}
        for name, path in FIGURES.items():
            values = [v for r in mine if (v := _figure(r, path)) is not None]
            row[name] = round(statistics.median(values), 3) if values else None
            row[f"{name}_range"] = [min(values), max(values)] if values else None
        out[system] = row
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """shardkv / etcd of the medians (delivery: > 1 is better; latency: < 1 is better)."""
    ours, theirs = summary.get("shardkv"), summary.get("etcd")
    if not ours or not theirs:
        return {}
    return {name: round(ours[name] / theirs[name], 2) if ours[name] and theirs[name] else None
            for name in ("events_per_s", "ack_p50_ms", "ack_p99_ms", "send_p99_ms",
                         "server_cpu_us_per_event")}


def table(watchers: int, summary: dict[str, dict[str, Any]]) -> str:
    def spread(row: dict[str, Any], name: str) -> str:
        low, high = row[f"{name}_range"] or (None, None)
        return f"{row[name]:g} ({low:g}-{high:g})" if row[name] is not None else "-"

    lines = [f"{'system':8} {'W':>5} {'rounds':>6}  {'events/s (range)':>24}  "
             f"{'ack p50 ms':>10}  {'ack p99 ms (range)':>24}  {'puts/s':>7}  "
             f"{'CPU watchers/writer/server':>26}  {'srv us/event':>12}"]
    for system, row in summary.items():
        cpu = "/".join(f"{row[n]:.2f}" for n in
                       ("watcher_cpu_cores", "writer_cpu_cores", "server_cpu_cores"))
        lines.append(f"{system:8} {watchers:>5} {row['rounds']:>6}  "
                     f"{spread(row, 'events_per_s'):>24}  {row['ack_p50_ms']:>10g}  "
                     f"{spread(row, 'ack_p99_ms'):>24}  {row['write_ops_per_s']:>7g}  {cpu:>26}  "
                     f"{row['server_cpu_us_per_event'] or 0:>12g}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4, help="watcher processes")
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="puts per second of the writer (0: as fast as acknowledged); "
                             "the same for both systems, to compare latency at equal load")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the events after the last write")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--json", dest="json_path", help="also write the JSON here")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy raw samples of the shardkv node per round into DIR "
                             "(server CPU per event is then not comparable)")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.profile and py_spy_binary() is None:
        raise SystemExit("--profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    # Every watcher is one connection from this one address: lift the node's per-address
    # bound (256 by default, node/api/limits.py) for this run's nodes only.
    os.environ["SHARDKV_MAX_CONNECTIONS_PER_ADDRESS"] = str(args.watchers + 64)
    binary = None if args.no_etcd else etcd_binary()
    systems = ["shardkv", "etcd"] if binary else ["shardkv"]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        for n in range(args.rounds):
            for system in systems:
                work = Path(tmp) / f"{system}-{n}"
                work.mkdir()
                server = (shardkv_node(work, fsync="always") if system == "shardkv"
                          else etcd_member(work, binary=binary))
                profile = (Path(args.profile) / f"shardkv-w{args.watchers}-round{n}.txt"
                           if args.profile and system == "shardkv" else None)
                with server.start():
                    rounds.append({"system": system, "round": n,
                                   "load_avg_1m": os.getloadavg()[0],
                                   **run_round(system, server, args, profile)})
    summary = summarize(rounds)
    document = {"watchers": args.watchers, "processes": len(shares(args.watchers,
                                                                     args.processes)),
                "writes": args.writes, "rate": args.rate, "load_avg_1m": os.getloadavg()[0],
                "summary": summary, "shardkv_over_etcd": ratios(summary), "rounds": rounds}
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    print(table(args.watchers, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Watch fan-out: 1 writer, W watchers of one prefix, against etcd's watch in the same run.

Each system runs alone on this machine in turn: a standalone shardkv node (``--fsync
always``) and a one-member etcd (fsync on every commit), so a write is durable on both when
it is acknowledged. One writer puts N keys under the prefix one after another; W watchers
(shardkv: ``/v1/watch`` WebSockets with binary msgpack frames; etcd: its HTTP/JSON
gateway's ``/v3/watch`` streams) each receive every event. All clients live in this one
Python process, the same harness for both systems.

Figures per system: events/s delivered (W * N events over the time from the first write to
the last event received), latency from the write's acknowledgement to each event (p50/p99;
an event that arrives before its acknowledgement counts 0, and the share of those is
reported), and latency from the write's send.

    nice python -m bench.watch_bench --watchers 100 --writes 500
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.etcd_reference import EtcdGatewayClient, etcd_binary, etcd_member
from bench.shardkv_node import shardkv_node

PREFIX = b"watch-bench/"


class Timeline:
    """When each write was sent and acknowledged, and when each watcher saw it."""

    def __init__(self, writes: int, watchers: int) -> None:
        self.sent = [0.0] * writes
        self.acked = [0.0] * writes
        self.seen: list[list[float]] = [[] for _ in range(watchers)]
        self.remaining = writes * watchers
        self.done = asyncio.Event()

    def saw(self, watcher: int, index: int) -> None:
        self.seen[watcher].append((index, time.perf_counter()))  # type: ignore[arg-type]
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()

    def report(self, started: float) -> dict[str, Any]:
        after_ack: list[float] = []
        after_send: list[float] = []
        early = 0
        last = started
        for seen in self.seen:
            for index, at in seen:  # type: ignore[misc]
                last = max(last, at)
                after_send.append(at - self.sent[index])
                lag = at - self.acked[index]
                early += lag < 0
                after_ack.append(max(0.0, lag))
        total = len(after_ack)
        return {
            "events": total,
            "events_per_s": round(total / (last - started), 1) if total else 0.0,
            "ack_to_event_ms": _percentiles(after_ack),
            "send_to_event_ms": _percentiles(after_send),
            "before_ack_share": round(early / total, 3) if total else None,
        }


def _percentiles(samples: list[float]) -> dict[str, float] | None:
    if len(samples) < 2:
        return None
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(q[49] * 1000, 3), "p99": round(q[98] * 1000, 3)}


async def run_shardkv(url: str, watchers: int, writes: int, within: float) -> dict[str, Any]:
    from shardkv.client import Client
    from shardkv.cluster.wire import pack, unpack

    timeline = Timeline(writes, watchers)
    ready = asyncio.Semaphore(0)

    async def watcher(n: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(f"{url}/v1/watch", max_msg_size=64 << 20) as ws:
            await ws.send_bytes(pack({"prefix": PREFIX}))
            async for msg in ws:
                frame = unpack(msg.data)
                if frame["type"] == "created":
                    ready.release()
                elif frame["type"] == "events":
                    for event in frame["events"]:
                        timeline.saw(n, int(event["value"]))
                elif frame["type"] == "error":
                    raise RuntimeError(f"watch failed: {frame}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session, \
            Client(nodes=[url], exactly_once=False) as kv:
        async def put(key: bytes, value: bytes) -> None:
            await kv.put(key, value)
        return await _drive(timeline, watchers, writes, within, ready,
                            [watcher(n, session) for n in range(watchers)], put)


async def run_etcd(url: str, watchers: int, writes: int, within: float) -> dict[str, Any]:
    timeline = Timeline(writes, watchers)
    ready = asyncio.Semaphore(0)
    key = base64.b64encode(PREFIX).decode()
    end = base64.b64encode(PREFIX[:-1] + bytes([PREFIX[-1] + 1])).decode()

    async def watcher(n: int, session: aiohttp.ClientSession) -> None:
        body = {"create_request": {"key": key, "range_end": end}}
        async with session.post(f"{url}/v3/watch", json=body,
                                timeout=aiohttp.ClientTimeout(total=None)) as response:
            decoder = json.JSONDecoder()
            buffer = ""
            async for chunk in response.content.iter_any():
                buffer += chunk.decode()
                while buffer:
                    buffer = buffer.lstrip()
                    try:
                        message, used = decoder.raw_decode(buffer)
                    except ValueError:
                        break
                    buffer = buffer[used:]
                    result = message.get("result", {})
                    if result.get("created"):
                        ready.release()
                    for event in result.get("events", []):
                        value = base64.b64decode(event["kv"]["value"])
                        timeline.saw(n, int(value))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        etcd = EtcdGatewayClient(url, aiohttp.ClientSession())
        try:
            return await _drive(timeline, watchers, writes, within, ready,
                                [watcher(n, session) for n in range(watchers)], etcd.put)
        finally:
            await etcd.close()


async def _drive(timeline: Timeline, watchers: int, writes: int, within: float,
                 ready: asyncio.Semaphore, watching: list[Awaitable[None]],
                 put: Callable[[bytes, bytes], Awaitable[None]]) -> dict[str, Any]:
    tasks = [asyncio.ensure_future(w) for w in watching]
    try:
        async with asyncio.timeout(within):
            for _ in range(watchers):
                await ready.acquire()
                failed = [t for t in tasks if t.done()]
                if failed:
                    raise RuntimeError(f"a watcher failed: {failed[0].exception()!r}")
        started = time.perf_counter()
        for i in range(writes):
            timeline.sent[i] = time.perf_counter()
            await put(PREFIX + f"{i % 100:03d}".encode(), str(i).encode())
            timeline.acked[i] = time.perf_counter()
        try:
            async with asyncio.timeout(within):
                await timeline.done.wait()
        except TimeoutError:
            pass  # report what arrived; "events" says how many
        report = timeline.report(started)
        report["expected_events"] = watchers * writes
        report["write_ops_per_s"] = round(writes / (timeline.acked[-1] - started), 1)
        return report
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"watchers": args.watchers, "writes": args.writes}
    # Every watcher is one connection from this one address: lift the node's per-address
    # bound (256 by default, node/api/limits.py) for this run's node only.
    os.environ["SHARDKV_MAX_CONNECTIONS_PER_ADDRESS"] = str(args.watchers + 64)
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        work = Path(tmp)
        with shardkv_node(work, fsync="always").start() as node:
            results["shardkv"] = asyncio.run(
                run_shardkv(node.url, args.watchers, args.writes, args.timeout))
        binary = etcd_binary()
        if binary and not args.no_etcd:
            with etcd_member(work, binary=binary).start() as etcd:
                results["etcd"] = asyncio.run(
                    run_etcd(etcd.url, args.watchers, args.writes, args.timeout))
    if "etcd" in results:
        ours, theirs = results["shardkv"], results["etcd"]
        results["ratio"] = {
            "delivery_x": round(ours["events_per_s"] / theirs["events_per_s"], 2)
            if theirs["events_per_s"] else None,
            "ack_to_event_p99_x": _ratio(ours, theirs, "ack_to_event_ms", "p99"),
            "send_to_event_p99_x": _ratio(ours, theirs, "send_to_event_ms", "p99"),
        }
    print(json.dumps(results, indent=2))
    return 0


def _ratio(ours: dict, theirs: dict, field: str, q: str) -> float | None:
    if not ours.get(field) or not theirs.get(field) or not theirs[field][q]:
        return None
    return round(ours[field][q] / theirs[field][q], 2)


if __name__ == "__main__":
    raise SystemExit(main())

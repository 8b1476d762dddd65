"""CPU per request of the lean REST lane in-process: a real node (memory engine, no socket
between it and the "client") whose lane connections are fed the bytes wrk sends.

Why: on the shared two-core machine wrk's throughput swings with the neighbours' load; the
process CPU of a fixed number of requests through ``LeanConnection.data_received``, the
lane's dispatch, ``RestApi.run`` and the answer's bytes does not. Each of ``--connections``
fake transports, behind the node's ``ConnectionGate`` as on its port, sends its next request
when its answer is written, as wrk does on its connections. The WAL's fsync is ``never`` by
default (``--fsync`` to change it): what is measured is the loop's Python work, not the disk.

``python -m bench.lean_lane_bench`` runs the rounds in children of this interpreter;
``--b-python`` alternates them with another checkout's interpreter (its own code, this
script), and prints us per request for each side and the per-round ratio A/B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VALUE = b"v" * 256


def wrk_request(op: str, i: int, port: int = 7100) -> bytes:
    """The bytes wrk's Lua script sends (``bench/wrk_generator.py``, ``wrk.format``)."""
    path = b"/v1/kv/bench%%3A%08d" % i
    if op == "get":
        return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)
    return (b"PUT %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
            % (path, port, len(VALUE)) + VALUE)


class _Client:
    """A fake transport and the client behind it: answers counted, the next request sent
    (on the loop's next turn, as a socket read would arrive) until ``left`` runs out."""

    def __init__(self, bench: _Bench, requests: list[bytes]) -> None:
        self.bench = bench
        self.requests = requests
        self.next = 0
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.bench.answered(data)
        self.send()

    def send(self) -> None:
        if self.bench.left <= 0:
            return
        self.bench.left -= 1
        data = self.requests[self.next % len(self.requests)]
        self.next += 1
        self.bench.loop.call_soon(self.protocol.data_received, data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def abort(self) -> None:
        raise AssertionError("the connection gate refused a benchmark connection")


class _Bench:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.left = 0
        self.outstanding = 0
        self.done: asyncio.Future[None] | None = None
        self.bad = 0

    def answered(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200 "):
            self.bad += 1
        self.outstanding -= 1
        if self.outstanding == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def run(self, clients: list[_Client], count: int) -> None:
        self.left = count
        self.outstanding = count
        self.done = self.loop.create_future()
        for client in clients:
            client.send()
        await self.done


async def _child(op: str, count: int, connections: int, fsync: str) -> dict[str, float]:
    from shardkv.node.config import NodeConfig
    from shardkv.node.server import NodeServer

    with tempfile.TemporaryDirectory(prefix="shardkv-lean-bench-") as temp:
        node = NodeServer(NodeConfig(data_dir=Path(temp), listen_port=0,  # type: ignore[call-arg]
                                     fsync=fsync))
        await node.start()
        lane = node.lean_lane
        assert lane is not None
        lane.tcp_keepalive = False
        bench = _Bench(asyncio.get_running_loop())
        clients = []
        for c in range(connections):
            client = _Client(bench, [wrk_request(op, (c * 7919 + i * 31) % 10_000)
                                     for i in range(64)])
            protocol = node.gate.protocol_factory(lane.protocol)()  # as the node's site
            client.protocol = protocol
            protocol.connection_made(client)  # type: ignore[arg-type]
            clients.append(client)
        if op == "get":  # every key present, as after the put cells
            for i in range(0, 10_000, 100):
                await node.ctx.store.mput([(b"bench:%08d" % k, VALUE)
                                           for k in range(i, i + 100)])
        await bench.run(clients, min(count, 5_000))  # warm-up
        started, wall = time.process_time(), time.perf_counter()
        await bench.run(clients, count)
        cpu, wall = time.process_time() - started, time.perf_counter() - wall
        for client in clients:
            client.protocol.connection_lost(None)
        await node.stop()
    if bench.bad:
        raise SystemExit(f"{bench.bad} answers were not 200")
    return {"us_per_request": cpu * 1e6 / count, "wall_us": wall * 1e6 / count}


def _round(python: str, op: str, count: int, connections: int, fsync: str) -> float:
    argv = [python, str(Path(__file__).resolve()), "--child", "--op", op, "--count",
            str(count), "--connections", str(connections), "--fsync", fsync]
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["us_per_request"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", default="put", choices=("put", "get"))
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--fsync", default="never")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--b-python", help="B runs this interpreter (another checkout's venv)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        from shardkv.cluster import event_loop
        print(json.dumps(event_loop.run(_child(args.op, args.count, args.connections,
                                               args.fsync))))
        return 0
    sides = {"A": sys.executable} | ({"B": args.b_python} if args.b_python else {})
    figures: dict[str, list[float]] = {side: [] for side in sides}
    for n in range(args.rounds):
        order = list(sides.items()) if n % 2 == 0 else list(reversed(sides.items()))
        for side, python in order:
            figures[side].append(_round(python, args.op, args.count, args.connections,
                                        args.fsync))
        print(f"round {n + 1}: " + "  ".join(f"{side} {figures[side][-1]:.1f} us"
                                           for side in sides), flush=True)
    for side, values in figures.items():
        print(f"{side}: median {statistics.median(values):.1f} us per {args.op}"
              f" ({', '.join(f'{v:.1f}' for v in values)})")
    if "B" in figures:
        ratios = [a / b for a, b in zip(figures["A"], figures["B"], strict=True)]
        print(f"A/B per round: {', '.join(f'{r:.3f}' for r in ratios)};"
              f" median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

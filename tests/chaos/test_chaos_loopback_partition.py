"""The loopback partition against real processes: cgroups + iptables on 127.0.0.1.

Two member processes each serve an echo port and, on command, dial the other (a fresh
connection, or a line over a connection opened earlier). A partition must silence both,
in both directions, while the test process (a client, outside every member) still reaches
them; healing restores everything; teardown leaves no chain behind.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from shardkv.chaos.nemesis.fault import run_command
from shardkv.chaos.nemesis.loopback_partition import (
    LoopbackNetwork,
    LoopbackPacketLoss,
    LoopbackPartition,
    loopback_partition_available,
)
from shardkv.chaos.nemesis.partitions import isolate

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

MEMBER = r"""
import asyncio, sys
async def echo(r, w):
    while data := await r.readline():
        w.write(data); await w.drain()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    kept = None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd, port = line.decode().split()
        try:
            if cmd == "open":
                kept = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", int(port)), 1)
                print("ok", flush=True); continue
            if cmd == "dial":
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", int(port)), 1)
            else:
                r, w = kept
            w.write(b"ping\n"); await w.drain()
            answer = await asyncio.wait_for(r.readline(), 1)
            print("ok" if answer == b"ping\n" else "fail", flush=True)
        except Exception:
            print("fail", flush=True)
asyncio.run(main())
"""


class Member:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", MEMBER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    async def ask(self, cmd: str, port: int) -> str:
        def roundtrip() -> str:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(f"{cmd} {port}\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline().strip()

        return await asyncio.to_thread(roundtrip)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def outside_dial(port: int) -> bool:
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        w.write(b"x\n")
        await w.drain()
        ok = await asyncio.wait_for(r.readline(), 1) == b"x\n"
        w.close()
        return ok
    except (OSError, TimeoutError):
        return False


@pytest.fixture
async def members():  # type: ignore[no-untyped-def]
    ok, why = await loopback_partition_available()
    if not ok:
        pytest.skip(f"loopback partition unavailable: {why}")
    a, b = Member(), Member()
    network = LoopbackNetwork(f"t{a.port % 10000}", {"a": [a.port], "b": [b.port]})
    await network.create()
    try:
        await network.place("a", a.proc.pid)
        await network.place("b", b.proc.pid)
        yield network, a, b
    finally:
        await network.destroy()
        a.stop()
        b.stop()


async def test_partition_silences_both_directions_and_heals(members) -> None:  # type: ignore[no-untyped-def]
    network, a, b = members
    assert await a.ask("dial", b.port) == "ok"
    assert await a.ask("open", b.port) == "ok"  # a long-lived connection, opened before
    assert await a.ask("send", 0) == "ok"
    partition = LoopbackPartition(network)
    detail = await partition.start(["a"], grudge=isolate(["a", "b"], ["a"]))
    assert sorted(map(tuple, detail["dropped"])) == [("a", "b"), ("b", "a")]
    assert await a.ask("dial", b.port) == "fail"
    assert await b.ask("dial", a.port) == "fail"
    assert await a.ask("send", 0) == "fail"  # the old connection is silenced too
    assert await outside_dial(a.port)  # clients are not members: they still get through
    assert await outside_dial(b.port)
    await partition.stop()
    assert await a.ask("dial", b.port) == "ok"
    assert await b.ask("dial", a.port) == "ok"


async def test_total_loss_then_heal_and_teardown(members) -> None:  # type: ignore[no-untyped-def]
    network, a, b = members
    loss = LoopbackPacketLoss(network)
    await loss.start(["b"], probability=1.0)
    assert await b.ask("dial", a.port) == "fail"
    await loss.heal_all()
    assert await b.ask("dial", a.port) == "ok"
    await network.destroy()
    _, rules = await run_command("iptables", "-w", "-S")
    assert network.filter_chain not in rules
    assert not (network.root / network.group).exists()

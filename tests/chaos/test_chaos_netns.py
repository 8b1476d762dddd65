"""Namespaces + veth + iptables partitions and packet loss, with real processes inside.

Skipped (with the reason) where namespaces are unavailable (not root, no ``ip``). Every
address used is inside the namespaces the test creates.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from shardkv.chaos.nemesis.netns import NetnsNetwork, NetnsPartition, netns_available
from shardkv.chaos.nemesis.packet_loss import PacketLoss, netem_available
from shardkv.chaos.nemesis.partitions import complete_grudge

ECHO = """
import asyncio, sys
async def echo(r, w):
    while data := await r.read(1024):
        w.write(data)
        await w.drain()
async def main():
    server = await asyncio.start_server(echo, sys.argv[1], 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

PROBE = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7)
    s.settimeout(0.7)
    s.sendall(b"ping")
    sys.exit(0 if s.recv(4) == b"ping" else 1)
except OSError:
    sys.exit(1)
"""


@pytest.fixture
async def network():
    ok, why = await netns_available()
    if not ok:
        pytest.skip(f"network namespaces unavailable: {why}")
    net = NetnsNetwork(["a", "b", "c"])
    await net.create()
    servers = []
    try:
        ports = {}
        for node in ("a", "c"):
            proc = await asyncio.create_subprocess_exec(
                *net.wrap(node, [sys.executable, "-c", ECHO, net.address(node)]),
                stdout=asyncio.subprocess.PIPE,
            )
            servers.append(proc)
            ports[node] = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        yield net, ports
    finally:
        for proc in servers:
            proc.kill()
            await proc.wait()
        await net.destroy()


async def reachable(net: NetnsNetwork, src: str, dst: str, port: int) -> bool:
    argv = [sys.executable, "-c", PROBE, net.address(dst), str(port)]
    proc = await asyncio.create_subprocess_exec(*(argv if src == "host" else net.wrap(src, argv)))
    return await proc.wait() == 0


async def test_partition_isolates_then_heals(network):
    net, ports = network
    assert await reachable(net, "b", "a", ports["a"])
    assert await reachable(net, "host", "a", ports["a"])
    partition = NetnsPartition(net)
    done = await partition.start(["a"])
    assert done["grudge"]["a"] == ["b", "c"]
    assert not await reachable(net, "b", "a", ports["a"])
    assert await reachable(net, "b", "c", ports["c"])  # the rest still talk
    await partition.stop()
    assert await reachable(net, "b", "a", ports["a"])


async def test_grudge_shapes_and_heal_all(network):
    net, ports = network
    partition = NetnsPartition(net)
    await partition.start([], grudge=complete_grudge([["a", "b"], ["c"]]))
    assert await reachable(net, "b", "a", ports["a"])
    assert not await reachable(net, "b", "c", ports["c"])
    await partition.heal_all()
    assert await reachable(net, "b", "c", ports["c"])


async def test_total_packet_loss_then_recovery(network):
    net, ports = network
    loss = PacketLoss(net)
    await loss.start(["a"], probability=1.0)
    assert not await reachable(net, "b", "a", ports["a"])
    await loss.stop()
    assert await reachable(net, "b", "a", ports["a"])


async def test_netem_detection_answers():
    available, why = await netem_available()
    assert isinstance(available, bool) and why

"""The container mode's network faults, without Docker: :class:`ContainerNetwork` shapes the
traffic of processes by entering their network namespace (``nsenter -t PID -n iptables``), so
processes in namespaces of their own (the veth network of :mod:`.nemesis.netns`) stand in for
containers. Behaviour is checked with real connections, including a "restarted container" (a
new process in a fresh namespace) getting its rules back.

Skipped, with the reason, where namespaces or iptables are unavailable (not root).
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from shardkv.chaos.nemesis.container_network import (
    CHAIN,
    ContainerNetwork,
    container_network_available,
)
from shardkv.chaos.nemesis.fault import run_command
from shardkv.chaos.nemesis.loopback_partition import LoopbackPacketLoss, LoopbackPartition
from shardkv.chaos.nemesis.netns import NetnsNetwork, netns_available
from shardkv.chaos.nemesis.partitions import complete_grudge
from test_chaos_netns import ECHO, reachable

MEMBERS = ("a", "b", "c")


@pytest.fixture
async def members():
    """Each member: an echo server in its own namespace; its pid is the "container" pid."""
    for check in (netns_available, container_network_available):
        ok, why = await check()
        if not ok:
            pytest.skip(f"cannot shape namespaces here: {why}")
    net = NetnsNetwork(list(MEMBERS))
    await net.create()
    procs: dict[str, asyncio.subprocess.Process] = {}
    ports: dict[str, int] = {}

    async def start(member: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *net.wrap(member, [sys.executable, "-c", ECHO, net.address(member)]),
            stdout=asyncio.subprocess.PIPE)
        procs[member] = proc
        assert proc.stdout is not None
        ports[member] = int(await asyncio.wait_for(proc.stdout.readline(), 10))

    try:
        for member in MEMBERS:
            await start(member)
        yield net, procs, ports, start
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await net.destroy()


def shaper(net: NetnsNetwork, procs: dict) -> ContainerNetwork:
    # `ip netns exec` execs the server, so the pid is the server's, inside the namespace.
    return ContainerNetwork({m: net.address(m) for m in MEMBERS}, lambda m: procs[m].pid)


async def test_grudge_cuts_both_ways_and_heals(members) -> None:
    net, procs, ports, _ = members
    network = shaper(net, procs)
    partition = LoopbackPartition(network, "partition-primary")  # any grudge-driven nemesis
    assert await reachable(net, "b", "a", ports["a"])
    await partition.start([], grudge=complete_grudge([["a"], ["b", "c"]]))
    assert not await reachable(net, "b", "a", ports["a"])
    assert not await reachable(net, "a", "c", ports["c"])
    assert await reachable(net, "b", "c", ports["c"])  # the majority side still talks
    assert await reachable(net, "host", "a", ports["a"])  # the clients' traffic is not cut
    await partition.stop()
    assert await reachable(net, "b", "a", ports["a"])
    status, rules = await run_command("nsenter", "-t", str(procs["a"].pid), "-n", "iptables",
                                      "-S", CHAIN)
    assert status == 0 and "DROP" not in rules, rules


async def test_isolation_without_a_grudge_and_a_restart_keeps_it(members) -> None:
    net, procs, ports, start = members
    network = shaper(net, procs)
    partition = LoopbackPartition(network, "partition-node")
    await partition.start(["c"])  # no grudge: c against every other member
    assert not await reachable(net, "a", "c", ports["c"])
    assert not await reachable(net, "c", "a", ports["a"])
    # "Restart the container": a new process, and a namespace without our rules (a restarted
    # container's namespace is new; here the chain is removed from c's by hand).
    procs["c"].kill()
    await procs["c"].wait()
    for args in (("-D", "OUTPUT", "-j", CHAIN), ("-F", CHAIN), ("-X", CHAIN)):
        await run_command("ip", "netns", "exec", net.namespace("c"), "iptables", "-w", *args)
    await start("c")
    status, _ = await run_command("nsenter", "-t", str(procs["c"].pid), "-n", "iptables",
                                  "-S", CHAIN, check=False)
    assert status != 0  # c's own rules are gone (a's and b's still drop what goes to c)
    # The runner places every restarted member: its rules come back, once each.
    await network.place("c", procs["c"].pid)
    await network.place("c", procs["c"].pid)
    status, rules = await run_command("nsenter", "-t", str(procs["c"].pid), "-n", "iptables",
                                      "-S", CHAIN)
    assert rules.count("DROP") == 2, rules  # c -> a and c -> b, not doubled by the 2nd place
    assert not await reachable(net, "c", "a", ports["a"])
    assert await reachable(net, "a", "b", ports["b"])
    await partition.heal_all()
    assert await reachable(net, "c", "a", ports["a"])


async def test_total_loss_then_recovery(members) -> None:
    net, procs, ports, _ = members
    loss = LoopbackPacketLoss(shaper(net, procs), "packet-loss")
    await loss.start(["a"], probability=1.0)
    assert not await reachable(net, "b", "a", ports["a"])
    await loss.stop()
    assert await reachable(net, "b", "a", ports["a"])

"""Network namespaces + veth + iptables: a private network for a cluster, and partitions.

Layout (root on Linux): a hub namespace holds a bridge; each node gets its own namespace with
one veth leg on the bridge and an address in a private /24 (10.213.X.0/24, X chosen free at
random); optionally a veth from the root namespace onto the bridge (the ``host`` node) so the
harness and clients running outside can reach the nodes. Processes are started inside their
namespace with :meth:`NetnsNetwork.wrap` (``ip netns exec NS ...``).

A partition is a grudge (:mod:`.partitions`): in each node's namespace, a chain of ours
(``SKV-CHAOS``, jumped to from INPUT) drops packets from every address the node must not
hear from. Dropping, not rejecting: peers see silence and time out, as across a real cut.
Healing flushes the chain; :meth:`destroy` deletes every namespace and link created, and
nothing outside them is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import secrets
from collections.abc import Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError, run_command
from shardkv.chaos.nemesis.partitions import Grudge, isolate

CHAIN = "SKV-CHAOS"
LOSS_CHAIN = "SKV-LOSS"
HOST = "host"


async def netns_available() -> tuple[bool, str]:
    """Whether namespaces, veth pairs and iptables work here, and if not, why."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    probe = f"skvprobe{secrets.token_hex(3)}"
    try:
        await run_command("ip", "netns", "add", probe)
        try:
            await run_command("ip", "netns", "exec", probe, "iptables", "-S")
            await run_command(
                "ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"
            )
        finally:
            await run_command("ip", "netns", "del", probe, check=False)
    except (NemesisError, FileNotFoundError) as exc:
        return False, str(exc)
    return True, "ok"


class NetnsNetwork:
    """A private network of namespaces for ``nodes`` (names), with partitions."""

    def __init__(self, nodes: Sequence[str], *, host_link: bool = True, seed: int | None = None):
        if len(nodes) > 250:
            raise ValueError("at most 250 nodes per network")
        self.nodes = list(nodes)
        self.prefix = f"skv{secrets.token_hex(2)}"
        self.host_link = host_link
        self._rng = random.Random(seed)
        self.subnet: ipaddress.IPv4Network | None = None
        self._created: list[str] = []
        self._host_veth: str | None = None
        self.grudge: Grudge = {}

    # -- naming ---------------------------------------------------------------------------
    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-n{self.nodes.index(node)}"

    def address(self, node: str) -> str:
        """The node's IPv4 address (``host`` is the root namespace's end, if linked)."""
        if self.subnet is None:
            raise RuntimeError("network not created")
        index = 254 if node == HOST else self.nodes.index(node) + 1
        return str(self.subnet.network_address + index)

    def wrap(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(node), *argv]

    # -- lifecycle ------------------------------------------------------------------------
    async def create(self) -> None:
        self.subnet = await self._free_subnet()
        prefix_len = self.subnet.prefixlen
        try:
            await run_command("ip", "netns", "add", self.hub)
            self._created.append(self.hub)
            await run_command("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            await run_command("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, node in enumerate(self.nodes):
                ns = self.namespace(node)
                await run_command("ip", "netns", "add", ns)
                self._created.append(ns)
                leg, peer = f"{self.prefix}h{i}", f"{self.prefix}n{i}"
                await run_command("ip", "-n", self.hub, "link", "add", leg, "type", "veth",
                                  "peer", "name", peer, "netns", ns)
                await run_command("ip", "-n", self.hub, "link", "set", leg, "master", "br0", "up")
                await run_command("ip", "-n", ns, "addr", "add",
                                  f"{self.address(node)}/{prefix_len}", "dev", peer)
                await run_command("ip", "-n", ns, "link", "set", peer, "up")
                await run_command("ip", "-n", ns, "link", "set", "lo", "up")
                for chain in (CHAIN, LOSS_CHAIN):
                    await self._iptables(node, "-N", chain)
                    await self._iptables(node, "-A", "INPUT", "-j", chain)
            if self.host_link:
                leg, peer = f"{self.prefix}hr", f"{self.prefix}r"
                await run_command("ip", "-n", self.hub, "link", "add", leg, "type", "veth",
                                  "peer", "name", peer, "netns", "1")
                self._host_veth = peer
                await run_command("ip", "-n", self.hub, "link", "set", leg, "master", "br0", "up")
                await run_command("ip", "addr", "add", f"{self.address(HOST)}/{prefix_len}",
                                  "dev", peer)
                await run_command("ip", "link", "set", peer, "up")
        except BaseException:
            await self.destroy()
            raise

    async def destroy(self) -> None:
        """Delete everything created (deleting a namespace deletes the links inside it)."""
        if self._host_veth is not None:
            await run_command("ip", "link", "del", self._host_veth, check=False)
            self._host_veth = None
        for ns in reversed(self._created):
            await run_command("ip", "netns", "del", ns, check=False)
        self._created.clear()

    async def __aenter__(self) -> NetnsNetwork:
        await self.create()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.destroy()

    async def _free_subnet(self) -> ipaddress.IPv4Network:
        _, routes = await run_command("ip", "-4", "route", "show")
        _, addrs = await run_command("ip", "-4", "-o", "addr", "show")
        taken = routes + "\n" + addrs
        for third in self._rng.sample(range(256), 256):
            if f"10.213.{third}." not in taken:
                return ipaddress.IPv4Network(f"10.213.{third}.0/24")
        raise NemesisError("no free 10.213.X.0/24 subnet")

    async def _iptables(self, node: str, *args: str) -> None:
        await run_command("ip", "netns", "exec", self.namespace(node), "iptables", "-w", *args)

    # -- partitions -----------------------------------------------------------------------
    async def apply_grudge(self, grudge: Grudge) -> None:
        """Replace the current partition by ``grudge`` (node -> nodes it must not hear)."""
        await self.heal()
        for node, peers in sorted(grudge.items()):
            if node == HOST:
                continue  # the root namespace is never filtered: we never touch it
            for peer in sorted(peers):
                await self._iptables(node, "-A", CHAIN, "-s", self.address(peer), "-j", "DROP")
        self.grudge = dict(grudge)

    async def heal(self) -> None:
        await asyncio.gather(*(self._iptables(node, "-F", CHAIN) for node in self.nodes))
        self.grudge = {}

    async def set_loss(self, node: str, probability: float) -> None:
        """Drop incoming packets of ``node`` at random (iptables ``statistic`` match)."""
        if not 0.0 < probability <= 1.0:
            raise ValueError("loss probability must be within (0, 1]")
        await self._iptables(node, "-F", LOSS_CHAIN)
        await self._iptables(node, "-A", LOSS_CHAIN, "-m", "statistic", "--mode", "random",
                             "--probability", f"{probability:.4f}", "-j", "DROP")

    async def clear_loss(self, node: str) -> None:
        await self._iptables(node, "-F", LOSS_CHAIN)


class NetnsPartition:
    """The ``partition`` nemesis on a :class:`NetnsNetwork`: ``start(targets)`` isolates the
    targets, or applies ``grudge=`` when given (any shape of :mod:`.partitions`)."""

    name = "partition"

    def __init__(self, network: NetnsNetwork) -> None:
        self.network = network

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        grudge: Grudge = params.get("grudge") or isolate(self.network.nodes, targets)
        await self.network.apply_grudge(grudge)
        return {"grudge": {node: sorted(peers) for node, peers in grudge.items()}}

    async def stop(self) -> dict[str, Any]:
        await self.network.heal()
        return {"healed": True}

    async def heal_all(self) -> None:
        with contextlib.suppress(NemesisError):
            await self.network.heal()

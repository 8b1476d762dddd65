"""Partitions and packet loss between containers (``shardkv chaos run --docker``).

Two ways to cut a container off, each used where it is the honest one:

- :class:`DisconnectPartition` (``partition-node``): ``docker network disconnect``, the
  container's interface is gone, and ``docker network connect --ip`` puts it back at the same
  address. Everything is cut, the clients' traffic too, as when a host drops off its network.
- :class:`ContainerNetwork` (every other shape: a primary from its replicas, one replica from
  its primary, majorities rings, packet loss): a grudge says which member must not hear which,
  and a rule in the *sender's* network namespace drops what it sends to the other's address
  (``nsenter -t PID -n iptables``, from the host, as root: the containers themselves keep no
  capabilities). Since every blocked pair is blocked both ways, neither side's bytes reach the
  other, whichever side opened the connection, long-lived streams included. The host's own
  traffic (the workload clients, from the gateway address) is never named, so it still
  reaches both sides, as clients outside a partitioned rack would.

Rules live in a chain of our own in each namespace (``SKVCHAOS``), so healing is a flush. A
container that is restarted gets a new namespace: :meth:`ContainerNetwork.place` builds the
chain there again and re-applies the rules that still hold for it, so a kill during a
partition does not heal it by accident.

Same interface as :class:`~shardkv.chaos.nemesis.loopback_partition.LoopbackNetwork`, so the
loopback partition and packet-loss nemeses drive either.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError, run_command
from shardkv.chaos.nemesis.loopback_partition import iptables_works
from shardkv.chaos.nemesis.partitions import Grudge, blocked_pairs
from shardkv.chaos.nemesis.process import is_alive

CHAIN = "SKVCHAOS"


async def container_network_available() -> tuple[bool, str]:
    """Root, nsenter and a working iptables: what shaping a container's traffic needs."""
    if os.geteuid() != 0:
        return False, "needs root (nsenter into the containers' network namespaces)"
    if shutil.which("nsenter") is None:
        return False, "nsenter is not installed"
    return await iptables_works()


class ContainerNetwork:
    """The iptables rules of one run, in each member's network namespace. ``ips`` maps
    member id to its fixed address; ``pid_of`` gives the host pid of its container's first
    process (a restarted container has a new one)."""

    def __init__(self, ips: Mapping[str, str], pid_of: Callable[[str], int]) -> None:
        self.ips = dict(ips)
        self.members = sorted(self.ips)
        self._pid_of = pid_of
        self._rules: dict[str, list[list[str]]] = {m: [] for m in self.members}
        self._placed: dict[str, int] = {}  # member -> the pid whose namespace has the chain

    async def _ipt(self, member: str, *args: str, check: bool = True) -> tuple[int, str]:
        pid = self._pid_of(member)
        if not is_alive(pid):
            if check:
                raise NemesisError(f"{member} is not running: no network namespace to shape")
            return 1, "not running"
        return await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w", *args,
                                 check=check)

    async def create(self) -> None:
        """Nothing to set up ahead: chains are made per namespace (``place``)."""

    async def place(self, member: str, pid: int) -> None:
        """A (re)started container: make the chain in its namespace, re-apply its rules."""
        if member not in self._rules or not is_alive(pid):
            return
        self._placed[member] = pid
        await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w", "-N", CHAIN,
                          check=False)  # exists already when the namespace is not new
        await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w", "-F", CHAIN)
        status, _ = await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w",
                                      "-C", "OUTPUT", "-j", CHAIN, check=False)
        if status != 0:
            await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w",
                              "-I", "OUTPUT", "-j", CHAIN)
        for rule in self._rules[member]:
            await run_command("nsenter", "-t", str(pid), "-n", "iptables", "-w",
                              "-A", CHAIN, *rule)

    async def _add(self, member: str, rule: list[str]) -> None:
        self._rules[member].append(rule)
        pid = self._pid_of(member)
        if not is_alive(pid):
            return  # down right now: ``place`` applies the rule when it is started again
        if self._placed.get(member) != pid:
            await self.place(member, pid)  # builds the chain, applies the rule with the rest
            return
        await self._ipt(member, "-A", CHAIN, *rule)

    async def apply_grudge(self, grudge: Grudge) -> list[list[str]]:
        done: set[tuple[str, str]] = set()
        for receiver, sender in sorted(blocked_pairs(grudge)):
            for a, b in ((sender, receiver), (receiver, sender)):
                if (a, b) not in done and a in self.ips and b in self.ips:
                    await self._add(a, ["-d", self.ips[b], "-j", "DROP"])
                    done.add((a, b))
        return [list(pair) for pair in sorted(done)]

    async def set_loss(self, member: str, probability: float) -> None:
        if not 0.0 < probability <= 1.0:
            raise NemesisError(f"loss probability must be in (0, 1], got {probability}")
        await self._add(member, ["-m", "statistic", "--mode", "random", "--probability",
                                 f"{probability:.4f}", "-j", "DROP"])

    async def heal(self) -> None:
        """Flush every member's chain (a member that is down has nothing to flush)."""
        for member in self.members:
            self._rules[member] = []
            await self._ipt(member, "-F", CHAIN, check=False)

    async def destroy(self) -> None:
        """The namespaces go with the containers; only the bookkeeping is left to drop."""
        await self.heal()


class DisconnectPartition:
    """``partition-node`` on containers: ``docker network disconnect`` the targets, and
    ``docker network connect --ip`` them back at their own address."""

    def __init__(self, network: str, container_of: Callable[[str], str],
                 ip_of: Callable[[str], str], name: str = "partition-node") -> None:
        self.name = name
        self.network = network
        self._container_of = container_of
        self._ip_of = ip_of
        self._active: list[str] = []
        self._disconnected: list[str] = []

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        for target in targets:
            await run_command("docker", "network", "disconnect", self.network,
                              self._container_of(target))
            self._active.append(target)
            self._disconnected.append(target)
        return {"disconnected": list(targets), "network": self.network}

    async def stop(self) -> dict[str, Any]:
        targets, self._active = self._active, []
        return {"reconnected": await self._reconnect(targets)}

    async def heal_all(self) -> None:
        self._active = []
        await self._reconnect(list(self._disconnected))

    async def _reconnect(self, targets: Sequence[str]) -> list[str]:
        done = []
        for target in targets:
            status, out = await run_command(
                "docker", "network", "connect", "--ip", self._ip_of(target), self.network,
                self._container_of(target), check=False)
            if status != 0 and "already exists" not in out:
                raise NemesisError(f"could not reconnect {target}: {out}")
            if target in self._disconnected:
                self._disconnected.remove(target)
            done.append(target)
        return done

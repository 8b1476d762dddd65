"""Partitions and packet loss between local processes on 127.0.0.1, with iptables and cgroups.

The launcher runs every process on the loopback address, so a partition cannot be told apart
by IP. It can by *who sends*: each process is put in a cgroup v2 of its own, and iptables'
``cgroup`` match sees which process a locally generated packet comes from (root on Linux,
cgroup2 mounted). Which connection a packet belongs to comes from conntrack: the first packet
of every connection is stamped (``CONNMARK``) with the mark of the process that opened it.

For a blocked pair (A, B), in both directions, drop what A sends:

- on connections A opened, towards any of B's listening ports (``--dports``), and
- on connections B opened (connmark = B's mark): A's answers and pushes.

So neither side's bytes reach the other, whichever side dialled, including long-lived streams
opened before the partition (a replication stream, a Raft connection). Peers see silence, as
with a real partition, until their own timeouts fire. ``loss`` drops a random fraction of every
packet a process sends (``statistic --mode random``), the packet-loss fault without netem.

Everything lives in chains of our own (named after the run), so healing is a flush and
teardown removes exactly what was added.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError, run_command
from shardkv.chaos.nemesis.partitions import Grudge, blocked_pairs

CGROUP2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
MARK_BASE = 0x5C00


def cgroup2_root() -> Path | None:
    for candidate in CGROUP2_CANDIDATES:
        root = Path(candidate)
        if (root / "cgroup.procs").exists() and (root / "cgroup.controllers").exists():
            return root
    return None


async def loopback_partition_available() -> tuple[bool, str]:
    """Whether this machine can run it: root, iptables, a writable cgroup2 hierarchy."""
    if os.geteuid() != 0:
        return False, "needs root (iptables, cgroups)"
    root = cgroup2_root()
    if root is None:
        return False, "no cgroup2 hierarchy mounted"
    if not os.access(root, os.W_OK):
        return False, f"{root} is not writable"
    return await iptables_works()


async def iptables_works() -> tuple[bool, str]:
    """Whether iptables answers here (the binary, the kernel's tables, the privileges)."""
    status, out = await run_command("iptables", "-w", "-L", "OUTPUT", "-n", check=False)
    if status != 0:
        return False, f"iptables does not work here: {out[:200]}"
    return True, "ok"


class LoopbackNetwork:
    """The cgroups and iptables chains of one run; ``ports`` names each member's listening
    ports (a node's HTTP port; a coordinator's HTTP and Raft ports)."""

    def __init__(self, run_id: str, ports: Mapping[str, Sequence[int]]) -> None:
        root = cgroup2_root()
        if root is None:
            raise NemesisError("no cgroup2 hierarchy mounted")
        self.run_id = run_id
        self.ports = {member: list(p) for member, p in ports.items()}
        self.members = sorted(self.ports)
        self.root = root
        self.group = f"shardkv-chaos-{run_id}"
        self.filter_chain = f"SKVC-{run_id}"[:28]
        self.mangle_chain = f"SKVM-{run_id}"[:28]
        self.mark = {m: MARK_BASE + i for i, m in enumerate(self.members)}
        self._created = False

    def cgroup_path(self, member: str) -> str:
        """The path iptables' ``--path`` wants: relative to the cgroup2 root."""
        return f"{self.group}/{member}"

    async def _ipt(self, *args: str, check: bool = True) -> tuple[int, str]:
        return await run_command("iptables", "-w", *args, check=check)

    async def create(self) -> None:
        for member in self.members:
            (self.root / self.group / member).mkdir(parents=True, exist_ok=True)
        await self._ipt("-N", self.filter_chain)
        await self._ipt("-I", "OUTPUT", "-o", "lo", "-j", self.filter_chain)
        await self._ipt("-t", "mangle", "-N", self.mangle_chain)
        await self._ipt("-t", "mangle", "-I", "OUTPUT", "-o", "lo", "-j", self.mangle_chain)
        self._created = True
        for member in self.members:
            await self._ipt("-t", "mangle", "-A", self.mangle_chain, "-m", "cgroup", "--path",
                            self.cgroup_path(member), "-m", "conntrack", "--ctstate", "NEW",
                            "-j", "CONNMARK", "--set-mark", str(self.mark[member]))

    async def place(self, member: str, pid: int) -> None:
        """Move a (re)started process into its member's cgroup."""
        procs = self.root / self.group / member / "cgroup.procs"
        await asyncio.to_thread(procs.write_text, f"{pid}\n")

    async def _drop_from(self, sender: str, receiver: str) -> None:
        path = self.cgroup_path(sender)
        ports = ",".join(str(p) for p in self.ports[receiver])
        await self._ipt("-A", self.filter_chain, "-m", "cgroup", "--path", path, "-p", "tcp",
                        "-m", "multiport", "--dports", ports, "-j", "DROP")
        await self._ipt("-A", self.filter_chain, "-m", "cgroup", "--path", path,
                        "-m", "connmark", "--mark", str(self.mark[receiver]), "-j", "DROP")

    async def apply_grudge(self, grudge: Grudge) -> list[list[str]]:
        done: set[tuple[str, str]] = set()
        for receiver, sender in sorted(blocked_pairs(grudge)):
            for a, b in ((sender, receiver), (receiver, sender)):
                if (a, b) not in done and a in self.ports and b in self.ports:
                    await self._drop_from(a, b)
                    done.add((a, b))
        return [list(pair) for pair in sorted(done)]

    async def set_loss(self, member: str, probability: float) -> None:
        if not 0.0 < probability <= 1.0:
            raise NemesisError(f"loss probability must be in (0, 1], got {probability}")
        await self._ipt("-A", self.filter_chain, "-m", "cgroup", "--path",
                        self.cgroup_path(member), "-m", "statistic", "--mode", "random",
                        "--probability", f"{probability:.4f}", "-j", "DROP")

    async def heal(self) -> None:
        if self._created:
            await self._ipt("-F", self.filter_chain, check=False)

    async def destroy(self) -> None:
        """Remove the chains and the cgroups (processes still inside go back to the root)."""
        if self._created:
            await self._ipt("-D", "OUTPUT", "-o", "lo", "-j", self.filter_chain, check=False)
            await self._ipt("-F", self.filter_chain, check=False)
            await self._ipt("-X", self.filter_chain, check=False)
            await self._ipt("-t", "mangle", "-D", "OUTPUT", "-o", "lo", "-j",
                            self.mangle_chain, check=False)
            await self._ipt("-t", "mangle", "-F", self.mangle_chain, check=False)
            await self._ipt("-t", "mangle", "-X", self.mangle_chain, check=False)
            self._created = False
        group = self.root / self.group
        for member in self.members:
            procs = group / member / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    (self.root / "cgroup.procs").write_text(f"{pid}\n")
            with contextlib.suppress(OSError):
                (group / member).rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


class LoopbackPartition:
    """The ``partition`` nemesis on a :class:`LoopbackNetwork`: ``start(targets, grudge=...)``
    applies the grudge (without one: isolate the targets from everyone)."""

    def __init__(self, network: LoopbackNetwork, name: str = "partition") -> None:
        self.name = name
        self.network = network

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        grudge: Grudge | None = params.get("grudge")
        if grudge is None:
            others = [m for m in self.network.members if m not in targets]
            grudge = {t: set(others) for t in targets}
            for other in others:
                grudge[other] = set(targets)
        grudge = {k: set(v) for k, v in grudge.items()}
        return {"dropped": await self.network.apply_grudge(grudge)}

    async def stop(self) -> dict[str, Any]:
        await self.network.heal()
        return {"healed": True}

    async def heal_all(self) -> None:
        await self.network.heal()


class LoopbackPacketLoss:
    """The ``packet`` nemesis: drop ``probability`` of what each target sends."""

    def __init__(self, network: LoopbackNetwork, name: str = "packet-loss") -> None:
        self.name = name
        self.network = network

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        probability = float(params.get("probability", 0.2))
        for target in targets:
            await self.network.set_loss(target, probability)
        return {"probability": probability}

    async def stop(self) -> dict[str, Any]:
        await self.network.heal()
        return {"healed": True}

    async def heal_all(self) -> None:
        await self.network.heal()

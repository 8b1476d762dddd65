"""The ``packet`` nemesis for loss: iptables' ``statistic`` match inside node namespaces.

Random loss at the packet level is what TCP retransmits through: connections stay up but
stall, which exercises timeouts and retries differently from a cut. It needs the namespaces
of :mod:`.netns` (the host's own iptables are never touched). Delay has no kernel mechanism
here: :func:`netem_available` says whether ``tc netem`` works on this kernel (it does not on
the machines this was built on); where it does not, delay goes through
:mod:`.delay_proxy`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError, run_command
from shardkv.chaos.nemesis.netns import NetnsNetwork


async def netem_available() -> tuple[bool, str]:
    """Try ``tc qdisc add ... netem`` on the loopback of a throwaway namespace."""
    probe = f"skvnetem{secrets.token_hex(3)}"
    try:
        await run_command("ip", "netns", "add", probe)
    except (NemesisError, FileNotFoundError) as exc:
        return False, f"no namespaces to probe in: {exc}"
    try:
        status, out = await run_command(
            "ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
            "delay", "1ms", check=False,
        )
        return status == 0, out or "ok"
    except FileNotFoundError as exc:
        return False, str(exc)
    finally:
        await run_command("ip", "netns", "del", probe, check=False)


class PacketLoss:
    """``start(targets, probability=0.3)`` drops that fraction of each target's incoming
    packets; ``stop`` and ``heal_all`` remove the rule."""

    name = "packet-loss"

    def __init__(self, network: NetnsNetwork, default_probability: float = 0.2) -> None:
        self.network = network
        self.default_probability = default_probability
        self._lossy: set[str] = set()

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        probability = float(params.get("probability", self.default_probability))
        for target in targets:
            await self.network.set_loss(target, probability)
            self._lossy.add(target)
        return {"probability": probability, "targets": list(targets)}

    async def stop(self) -> dict[str, Any]:
        healed = sorted(self._lossy)
        for target in healed:
            await self.network.clear_loss(target)
        self._lossy.clear()
        return {"healed": healed}

    async def heal_all(self) -> None:
        for target in self.network.nodes:
            with contextlib.suppress(NemesisError):
                await self.network.clear_loss(target)
        self._lossy.clear()

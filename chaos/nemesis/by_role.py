"""Faults aimed at roles rather than names: "the primary of a shard", "the coordinator
leader", "a shard's primary cut off from its replicas".

A schedule is generated up front from the seed, but who is primary is only known when the
fault starts (the previous fault may have moved it). :class:`RoleTargeted` wraps a nemesis and
resolves its targets (and, for partitions, the grudge) from the live cluster at ``start``; the
resolved targets are recorded in the start event's detail so the history says who was hit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import Nemesis, NemesisError

Resolver = Callable[[Sequence[str], dict[str, Any]],
                    Awaitable[tuple[list[str], dict[str, Any]]]]


class RoleTargeted:
    """``start(targets, **params)`` calls ``resolve(targets, params)`` for the real targets
    and params, then starts the wrapped nemesis on them."""

    def __init__(self, name: str, inner: Nemesis, resolve: Resolver) -> None:
        self.name = name
        self.inner = inner
        self._resolve = resolve

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        real, real_params = await self._resolve(targets, dict(params))
        if not real:
            raise NemesisError(f"{self.name}: no target resolved (cluster map unavailable?)")
        detail = await self.inner.start(real, **real_params)
        return {**detail, "resolved_targets": list(real)}

    async def stop(self) -> dict[str, Any]:
        return await self.inner.stop()

    async def heal_all(self) -> None:
        await self.inner.heal_all()

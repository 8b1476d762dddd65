"""Which keys move: the hash arcs that one source shard gives to the target shards.

A key moves from ``source`` when the current ring gives it to the source and the target ring
to one of ``targets`` (its destination). Both rings are computed by ``cluster/ring.py``,
exactly as the client and the coordinators compute them, so every process agrees on the
moving set. An add has one target (the new shard); a remove or a lower weight has one source
and every other shard as a target, so one source stream fans out to several targets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import shard_for_key


@dataclass(frozen=True, slots=True)
class MovingArcs:
    current: RingSpec
    target_ring: RingSpec
    source: str
    targets: frozenset[str]

    @classmethod
    def of(cls, current: RingSpec, target_ring: RingSpec, source: str,
           targets: Iterable[str]) -> MovingArcs:
        return cls(current, target_ring, source, frozenset(targets))

    def destination(self, key: bytes) -> str | None:
        """The target shard ``key`` moves to, or None if it does not move from the source."""
        # The target ring first: for an add, most keys do not go to the target.
        owner = shard_for_key(self.target_ring, key)
        if owner == self.source or owner not in self.targets:
            return None
        return owner if shard_for_key(self.current, key) == self.source else None

    def moves(self, key: bytes) -> bool:
        return self.destination(key) is not None

    def owned_by_source(self, key: bytes) -> bool:
        return shard_for_key(self.current, key) == self.source


def target_spec(current: RingSpec, weights: dict[str, int]) -> RingSpec:
    """The ring after the flip: same hash and vnodes, the target weights."""
    return RingSpec(version=current.version + 1, hash=current.hash, vnodes=current.vnodes,
                    shards=dict(weights))

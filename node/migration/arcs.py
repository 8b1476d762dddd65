"""Which keys move: the hash arcs that one source shard gives to one target shard.

A key moves from ``source`` to ``target`` when the current ring gives it to the source and
the target ring to the target. Both rings are computed by ``cluster/ring.py``, exactly as the
client and the coordinators compute them, so every process agrees on the moving set.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import shard_for_key


@dataclass(frozen=True, slots=True)
class MovingArcs:
    current: RingSpec
    target_ring: RingSpec
    source: str
    target: str

    def moves(self, key: bytes) -> bool:
        # The target ring first: most keys do not go to the target, one lookup decides.
        return (shard_for_key(self.target_ring, key) == self.target
                and shard_for_key(self.current, key) == self.source)

    def owned_by_source(self, key: bytes) -> bool:
        return shard_for_key(self.current, key) == self.source


def target_spec(current: RingSpec, weights: dict[str, int]) -> RingSpec:
    """The ring after the flip: same hash and vnodes, the target weights."""
    return RingSpec(version=current.version + 1, hash=current.hash, vnodes=current.vnodes,
                    shards=dict(weights))

"""Which keys move, and where: the migration's fast ring lookup gives exactly the answers of
``shard_for_key`` (add, remove and reweight rings, both hash functions)."""

from __future__ import annotations

import pytest
from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import shard_for_key
from shardkv.node.migration.arcs import MovingArcs, owners, target_spec

CASES = [
    ({"s1": 1, "s2": 1}, {"s1": 1, "s2": 1, "s3": 1}, "s1", ["s3"]),  # add
    ({"s1": 1, "s2": 1, "s3": 1}, {"s1": 1, "s3": 1}, "s2", ["s1", "s3"]),  # remove
    ({"s1": 1, "s2": 2, "s3": 1}, {"s1": 3, "s2": 2, "s3": 1}, "s2", ["s1"]),  # weight up
    ({"s1": 3, "s2": 1}, {"s1": 1, "s2": 1}, "s1", ["s2"]),  # weight down
]


@pytest.mark.parametrize("hash_name", ["md5", "blake2b"])
@pytest.mark.parametrize(("now", "after", "source", "targets"), CASES)
def test_destinations_match_the_ring(hash_name: str, now: dict[str, int],
                                     after: dict[str, int], source: str,
                                     targets: list[str]) -> None:
    current = RingSpec(version=4, hash=hash_name, shards=now)
    arcs = MovingArcs.of(current, target_spec(current, after), source, targets)
    assert arcs._lookup is not None  # the fast path is in use
    moved = 0
    for i in range(5000):
        key = f"user:{i}".encode()
        owner_now = shard_for_key(current, key)
        owner_after = shard_for_key(arcs.target_ring, key)
        expected = (owner_after if owner_now == source and owner_after != source
                    and owner_after in targets else None)
        assert arcs.destination(key) == expected, key
        moved += expected is not None
    assert moved > 0
    keys = [f"user:{i}".encode() for i in range(5000)]
    assert arcs.destinations(keys) == [arcs.destination(key) for key in keys]
    assert owners(current, keys) == [shard_for_key(current, key) for key in keys]

"""Which keys move, and where: the migration's fast ring lookup gives exactly the answers of
``shard_for_key`` (add, remove and reweight rings, both hash functions)."""

from __future__ import annotations

import dataclasses

import pytest
from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.ring import shard_for_key
from shardkv.node.migration.arcs import MovingArcs, owned_by, owners, target_spec

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


@pytest.mark.parametrize(("now", "after", "source", "targets"), CASES)
def test_the_arc_table_agrees_at_every_arc_boundary(
        now: dict[str, int], after: dict[str, int], source: str, targets: list[str]) -> None:
    """One bisection over both rings' merged points gives what two lookups give, on each
    point, just below and just above it, and at both ends of the hash space (the hashes fed
    as the 8-byte digests they are)."""
    current = RingSpec(version=4, hash="md5", shards=now)
    arcs = MovingArcs.of(current, target_spec(current, after), source, targets)
    table, rings = arcs._table, arcs._lookup
    assert table is not None and rings is not None
    points = [int.from_bytes(p, "big") for p in table.points]
    hashes = [h for h in [0, 2**64 - 1, *(p + d for p in points for d in (-1, 0, 1))]
              if 0 <= h < 2**64]

    def expected(hashed: int) -> str | None:
        owner_now, owner_after = rings.now.owner(hashed), rings.after.owner(hashed)
        return (owner_after if owner_now == source and owner_after != source
                and owner_after in targets else None)

    as_digests = dataclasses.replace(table, digests=iter)
    assert as_digests.labels_of([h.to_bytes(8, "big") for h in hashes]) == [
        expected(h) for h in hashes]


@pytest.mark.parametrize("hash_name", ["md5", "blake2b"])
@pytest.mark.parametrize("shards", [{"s1": 1, "s2": 1, "s3": 1}, {"s1": 3, "s2": 1}])
def test_owned_by_matches_the_ring(hash_name: str, shards: dict[str, int]) -> None:
    spec = RingSpec(version=2, hash=hash_name, shards=shards)
    keys = [f"k{i:09d}".encode() for i in range(5000)]
    for shard in shards:
        assert owned_by(spec, shard, keys) == [shard_for_key(spec, k) == shard for k in keys]

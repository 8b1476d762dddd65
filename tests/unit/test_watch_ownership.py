"""How a watch tells a user's write from a migration's copy or clean-up: the ring in effect
for (shard, version) follows the flip LSNs the map records (cluster/ring_history.py)."""

from __future__ import annotations

from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.ring_history import RingHistory
from shardkv.coordinator.state_machine import MapStateMachine

FLOOR = 1 << 32


def added_s3() -> tuple[ClusterMap, ClusterMap]:
    """A 2-shard map and the same map after s3 was added (s1 fenced at 40, s2 at 50, s3
    imported up to FLOOR + 9)."""
    m = MapStateMachine()
    m.apply({"op": "bootstrap", "shards": 2, "replication_factor": 1})
    before = m.current.copy()
    for command in (
            {"op": "begin_migration", "id": "m1", "kind": "add", "now": 1.0},
            {"op": "migration_progress", "id": "m1", "lsn_floor": FLOOR,
             "floor_from": {"s3": 0}},
            {"op": "migration_state", "id": "m1", "state": "flipping"},
            {"op": "flip_migration", "id": "m1",
             "epochs": {s: m.current.shards[s].epoch for s in ("s1", "s2")},
             "lsns": {"s1": 40, "s2": 50, "s3": FLOOR + 9}}):
        assert "error" not in m.apply(command), command
    return before, m.current.copy()


def moved_key(before: ClusterMap, after: ClusterMap, source: str) -> bytes:
    return next(k for i in range(10_000) for k in [f"k{i}".encode()]
                if shard_for_key(before, k) == source and shard_for_key(after, k) == "s3")


def test_a_moved_key_is_the_sources_up_to_its_fence_and_the_targets_after_its_imports() -> None:
    before, after = added_s3()
    history = RingHistory(after)
    key = moved_key(before, after, "s1")
    assert history.owned("s1", key, 40)  # a user's write before the fence
    assert not history.owned("s1", key, 41)  # the clean-up's delete after the flip
    assert not history.owned("s3", key, FLOOR + 9)  # the imported copy
    assert history.owned("s3", key, FLOOR + 10)  # a user's write on the new owner
    # Its first events on s3 wait for s1's up to the fence; s1's own have no handover.
    assert history.arrival("s3", key, FLOOR + 10) == ("s1", 40)
    assert history.arrival("s1", key, 40) is None
    assert history.crossing("s3", before.ring.version) == FLOOR + 9
    assert history.joined("s3") == FLOOR + 9 and history.joined("s1") is None


def test_a_key_that_stays_is_its_shards_on_both_sides_and_nothing_is_known_before() -> None:
    before, after = added_s3()
    stays = next(k for i in range(10_000) for k in [f"k{i}".encode()]
                 if shard_for_key(before, k) == shard_for_key(after, k) == "s2")
    history = RingHistory(after)
    assert history.owned("s2", stays, 3) and history.owned("s2", stays, 10**6)
    assert history.arrival("s2", stays, 10**6) is None
    # A map without a flip judges by its current ring: a copy being imported is not a
    # user's write, whatever its version.
    key = moved_key(before, after, "s2")
    assert not RingHistory(before).owned("s3", key, FLOOR + 1)
    assert RingHistory(before).flips == []

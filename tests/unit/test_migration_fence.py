"""The source's write fence counts what its final catch-up must wait for: every write that
passed the check before the fence was up, whatever its key and whether or not the map
showed the migration yet; once fenced it refuses writes to moving keys, counts nothing, and
drains the rest."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.cluster.cluster_map import ClusterMap, RingSpec
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.migration_record import COPYING, FLIPPING, MigrationRecord
from shardkv.cluster.ring import shard_for_key
from shardkv.node.migration.fence import ArcFence

BEFORE = {"s1": 1, "s2": 1}
AFTER = {"s1": 3, "s2": 1}  # s1's weight up: s2 gives it part of its arcs


def map_in(state: str | None, version: int) -> ClusterMap:
    record = None if state is None else MigrationRecord(
        id="m1", kind="weight", target="s1", sources=["s2"], target_ring=AFTER, state=state,
        targets=["s1"])
    return ClusterMap(version=version, ring=RingSpec(version=1, shards=BEFORE),
                      migration=record)


def keys_of_s2() -> tuple[bytes, bytes]:
    """A key s2 gives to s1, and one it keeps."""
    now, after = RingSpec(version=1, shards=BEFORE), RingSpec(version=2, shards=AFTER)
    keys = [f"k:{i}".encode() for i in range(10_000)]
    mine = [k for k in keys if shard_for_key(now, k) == "s2"]
    return (next(k for k in mine if shard_for_key(after, k) == "s1"),
            next(k for k in mine if shard_for_key(after, k) == "s2"))


async def test_a_write_from_before_the_migration_is_drained() -> None:
    moving, staying = keys_of_s2()
    fence = ArcFence()
    fence.follow(map_in(None, 1), "s2")
    assert fence.enter(iter([moving]), writes=True)  # before the map: counted
    assert not fence.enter(iter([moving]), writes=False)  # reads never are
    fence.follow(map_in(COPYING, 2), "s2")
    assert fence.enter(iter([moving]), writes=True)
    assert fence.enter(iter([staying]), writes=True)  # (it may move in a later migration)
    fence.follow(map_in(FLIPPING, 3), "s2")
    with pytest.raises(Unavailable):
        fence.enter(iter([moving]), writes=True)
    with pytest.raises(Unavailable):
        fence.enter(iter([moving]), writes=False)
    assert not fence.enter(iter([staying]), writes=True)  # fenced: not counted
    assert fence.status() == {"fenced": True, "draining": False, "writes_in_flight": 3}

    drained = asyncio.create_task(fence.drained(30))
    await asyncio.sleep(0)
    assert fence.status()["draining"]
    fence.leave()
    fence.leave()
    await asyncio.sleep(0)
    assert not drained.done()  # the write from before the map is still on its way
    fence.leave()
    await asyncio.wait_for(drained, 30)
    assert fence.status() == {"fenced": True, "draining": False, "writes_in_flight": 0}
    fence.follow(map_in(None, 4), "s2")  # the flip: nothing fenced, writes counted again
    assert fence.enter(iter([moving]), writes=True)


async def test_nothing_in_flight_drains_at_once() -> None:
    fence = ArcFence()
    fence.follow(map_in(FLIPPING, 3), "s2")
    await asyncio.wait_for(fence.drained(30), 30)

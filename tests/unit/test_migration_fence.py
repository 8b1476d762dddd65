"""The write fence's drain: the final catch-up may read the log's end only once no write
that could touch a moving key is still on its way into the log, including one that passed
its check before this node's map showed the migration at all (the lost write of
``test_remove_then_reweight_under_write_load``, docs/resharding.md)."""

from __future__ import annotations

import asyncio

import pytest
from shardkv.cluster.cluster_map import ClusterMap, RingSpec
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.migration_record import COPYING, FLIPPING, KIND_WEIGHT, MigrationRecord
from shardkv.node.migration.fence import ArcFence

SOURCE, TARGET = "s1", "s2"


def reweight_map(state: str | None, version: int) -> ClusterMap:
    """s1 gives part of its arcs to s2 (its weight drops from 3 to 1) once ``state`` is set."""
    ring = RingSpec(version=3, shards={SOURCE: 3, TARGET: 1})
    record = None if state is None else MigrationRecord(
        id="m1", kind=KIND_WEIGHT, target=SOURCE, sources=[SOURCE], targets=[TARGET],
        target_ring={SOURCE: 1, TARGET: 1}, state=state)
    return ClusterMap(version=version, ring=ring, migration=record)


def moving_and_staying_keys(fence: ArcFence) -> tuple[bytes, bytes]:
    assert fence.arcs is not None
    keys = [f"k{i}".encode() for i in range(1000)]
    moving = next(k for k in keys if fence.arcs.destination(k) == TARGET)
    staying = next(k for k in keys if fence.arcs.destination(k) is None)
    return moving, staying


async def drained_now(fence: ArcFence) -> bool:
    try:
        await fence.drained(0.05)
    except TimeoutError:
        return False
    return True


async def test_a_write_checked_before_the_map_showed_the_migration_holds_the_drain() -> None:
    fence = ArcFence()
    fence.follow(reweight_map(None, 10), SOURCE)
    # A write passes its check with no migration in sight, then waits (a lock, a slow read).
    assert fence.enter(iter([b"any-key"]), writes=True)
    fence.follow(reweight_map(COPYING, 11), SOURCE)
    fence.follow(reweight_map(FLIPPING, 12), SOURCE)
    assert fence.fenced
    assert not await drained_now(fence), "the fence drained with an uncounted write in flight"
    fence.leave()
    assert await drained_now(fence)


async def test_once_the_migration_is_known_only_moving_writes_are_counted() -> None:
    fence = ArcFence()
    fence.follow(reweight_map(COPYING, 11), SOURCE)
    moving, staying = moving_and_staying_keys(fence)
    assert not fence.enter(iter([staying]), writes=True)
    assert not fence.enter(iter([moving]), writes=False)  # reads are not waited for
    assert fence.enter(iter([moving]), writes=True)
    fence.follow(reweight_map(FLIPPING, 12), SOURCE)
    assert not await drained_now(fence)
    with pytest.raises(Unavailable):
        fence.enter(iter([moving]), writes=True)
    with pytest.raises(Unavailable):
        fence.enter(iter([moving]), writes=False)
    assert not fence.enter(iter([staying]), writes=True)  # the rest of the shard writes on
    fence.leave()
    assert await drained_now(fence)


async def test_reads_without_a_migration_are_not_counted_and_writes_drain() -> None:
    fence = ArcFence()
    fence.follow(reweight_map(None, 10), SOURCE)
    assert not fence.enter(iter([b"k"]), writes=False)
    entered = [fence.enter(iter([b"k"]), writes=True) for _ in range(3)]
    assert entered == [True, True, True]
    waiter = asyncio.ensure_future(fence.drained(5.0))
    for _ in entered:
        assert not waiter.done()
        fence.leave()
        await asyncio.sleep(0)
    await asyncio.wait_for(waiter, 5.0)

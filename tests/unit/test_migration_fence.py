"""The source's write fence counts what its final catch-up must wait for: every write that
passed the check before the fence was up, whatever its key and whether or not the map
showed the migration yet; once fenced it refuses writes to moving keys, counts nothing, and
drains the rest."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def _store_ctx(tmp_path: Any) -> tuple[Any, Any]:
    from shardkv.node.api.node_context import NodeContext
    from shardkv.node.storage.store import Store, StoreConfig
    from shardkv.node.wal.write_ahead_log import WalOptions

    store = await Store.open(StoreConfig(data_dir=tmp_path, wal=WalOptions(fsync="never")))
    return NodeContext(store=store), store


@pytest.mark.parametrize("outcome", ["flip", "abort", "fence outlasts the hold"])
async def test_a_request_for_a_fenced_key_is_held_until_the_fence_lifts(
    outcome: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held, not refused: after the flip it gets STALE_MAP naming the new ring (the client
    goes straight to the new owner), after an abort it is served here, and only a fence
    that outlasts the hold is refused as before (retryable)."""
    from shardkv.cluster.errors import StaleMap
    from shardkv.node.api.operations import execute, lookup
    from shardkv.node.migration import fence as fence_module

    moving, _ = keys_of_s2()
    ring = {"spec": RingSpec(version=1, shards=BEFORE)}

    def owns_key(key: bytes) -> None:
        if shard_for_key(ring["spec"], key) != "s2":
            raise StaleMap("moved", ring_version=ring["spec"].version)

    ctx, store = await _store_ctx(tmp_path)
    try:
        fence = ArcFence()
        fence.follow(map_in(FLIPPING, 3), "s2")
        ctx.write_fence, ctx.owns_key = fence, owns_key
        if outcome == "fence outlasts the hold":
            monkeypatch.setattr(fence_module, "FENCE_HOLD_S", 0.05)
            with pytest.raises(Unavailable, match="moving to shard s1"):
                await execute(ctx, lookup("put"), {"key": moving, "value": b"v"})
            return
        held = asyncio.create_task(execute(ctx, lookup("put"), {"key": moving, "value": b"v"}))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not held.done()  # neither refused nor served while fenced
        if outcome == "flip":
            ring["spec"] = RingSpec(version=2, shards=AFTER)
        fence.follow(map_in(None, 4), "s2")
        if outcome == "flip":
            with pytest.raises(StaleMap) as caught:
                await asyncio.wait_for(held, 30)
            assert caught.value.details["ring_version"] == 2
        else:
            assert (await asyncio.wait_for(held, 30))["version"] >= 1
    finally:
        await store.close()

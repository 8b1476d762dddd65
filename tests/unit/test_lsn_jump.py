"""``Store.jump_lsn``: a store that holds keys and takes writes raises its LSN floor (an
online migration's target, docs/resharding.md). Keys keep their values, versions and
expiry; the next write gets a version above the floor; blind writes racing the jump are
refused as retryable (never appended in the middle of the log's restart, which would break
the store); the state survives a reopen (recovery from the snapshot at the floor)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shardkv.cluster.errors import Unavailable
from shardkv.node.storage.store import Store
from test_store import config_for

FLOOR = 2**32 + 17


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_a_store_with_keys_jumps_its_lsn_and_keeps_every_key(engine: str,
                                                                   tmp_path: Path) -> None:
    store = await Store.open(config_for(engine, tmp_path))
    try:
        versions = {}
        for i in range(50):
            versions[f"k{i}".encode()] = await store.put(f"k{i}", f"v{i}",
                                                         ttl=3600 if i % 5 == 0 else None)
        await store.delete(b"k1")
        racing_ok: list[int] = []
        refused: list[str] = []

        async def race() -> None:
            for i in range(200):
                try:
                    racing_ok.append(await store.put(f"race{i}", b"x"))
                except Unavailable as exc:
                    refused.append(str(exc))
                await asyncio.sleep(0)

        racer = asyncio.create_task(race())
        await asyncio.sleep(0)
        assert await store.jump_lsn(FLOOR) >= FLOOR
        await racer
        assert refused and "LSN floor" in refused[0]  # the race did meet the jump
        assert store.write_failure is None
        assert await store.jump_lsn(FLOOR) >= FLOOR  # idempotent
        for key, version in versions.items():
            item = await store.get(key)
            if key == b"k1":
                assert item is None
                continue
            assert item is not None and item.version == version, key
            assert item.value == f"v{key.decode()[1:]}".encode()
        assert (await store.ttl(b"k5")) is not None
        assert all(v < 2**32 or v > FLOOR for v in racing_ok)
        after = await store.put(b"k2", b"new")
        assert after > FLOOR
    finally:
        await store.close()
    reopened = await Store.open(config_for(engine, tmp_path))
    try:
        assert reopened.last_lsn == after
        item = await reopened.get(b"k2")
        assert item is not None and (item.value, item.version) == (b"new", after)
        item = await reopened.get(b"k3")
        assert item is not None and item.version == versions[b"k3"]
        assert await reopened.put(b"k9", b"again") == after + 1
    finally:
        await reopened.close()


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_a_replica_behind_the_floor_starts_from_the_floor_snapshot(
    engine: str, tmp_path: Path
) -> None:
    """A replica catching up after the jump gets the floor snapshot and then the log after
    it, so its history is the primary's: promoted, it can still serve a watch resuming
    between the floor and now (a snapshot taken "now" left that gap: chaos seed 82)."""
    store = await Store.open(config_for(engine, tmp_path))
    try:
        for i in range(5):
            await store.put(f"k{i}", b"v")
        await store.jump_lsn(FLOOR)
        written = [await store.put(f"after{i}", b"v") for i in range(3)]
        meta = await store.snapshot_for_replica()
        assert meta.lsn == FLOOR
        assert [e.lsn for e in store.wal.read_from(FLOOR + 1)] == written
    finally:
        await store.close()


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_without_a_snapshot_the_log_reaches_a_replica_gets_a_new_one(
    engine: str, tmp_path: Path
) -> None:
    store = await Store.open(config_for(engine, tmp_path))
    try:
        last = [await store.put(f"k{i}", b"v") for i in range(5)][-1]
        meta = await store.snapshot_for_replica()
        assert meta.lsn == last and meta.path.exists()
        assert (await store.snapshot_for_replica()).lsn == last  # now reused, not retaken
    finally:
        await store.close()

"""A migration's work in bounded slices of the event loop (node/migration/loop_slices.py):
a batch encoded a slice at a time is the same bytes; an import batch larger than a slice is
written as several entries, and batches imported side by side still end with the newest
version of every key; a new attempt's ``begin`` never lands in the middle of a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from migration_target_store import target_store
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import RingSpec
from shardkv.cluster.errors import StaleEpoch
from shardkv.node.migration import importer as importer_module
from shardkv.node.migration.arcs import MovingArcs
from shardkv.node.migration.importer import ArcImporter
from shardkv.node.migration.loop_slices import pack_with_records
from shardkv.node.storage.store import Store

ARCS = MovingArcs.of(RingSpec(1, shards={"s1": 1}), RingSpec(2, shards={"s1": 1, "s2": 1}),
                     "s1", ["s2"])


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with target_store(request.param, tmp_path, 100_000) as opened:
        yield opened


def _records(count: int, version: int, value: bytes) -> tuple[tuple[object, ...], ...]:
    return tuple(("put", b"k%05d" % i, value, False, None, version + i) for i in range(count))


@pytest.mark.parametrize("count", [0, 1, 7, 1024, 2500])
@pytest.mark.parametrize("slice_keys", [1, 100, 1024])
async def test_sliced_encoding_is_the_same_bytes(count: int, slice_keys: int) -> None:
    payload = {"id": "m1", "source": "s1", "ring": {"version": 1}, "targets": ["s2"]}
    records = [("put", b"k%d" % i, b"v" * (i % 50), i % 2 == 0, None if i % 3 else 1.5, i)
               for i in range(count)]
    expected = wire.pack({**payload, "records": records})
    assert await pack_with_records(payload, records, slice_keys) == expected


async def test_a_batch_larger_than_a_slice_is_several_entries(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer_module, "SLICE_KEYS", 1000)
    importer = ArcImporter()
    await importer.begin(store, "m1", "a1", ARCS)
    entries = store.wal.stats().appended_entries
    answer = await importer.apply(store, "m1", "s1", "a1", _records(2500, 10, b"x"))
    assert answer["applied"] == 2500 and answer["lsn"] == store.applied_lsn
    assert store.wal.stats().appended_entries - entries == 3
    items = await store.mget([b"k00000", b"k02499"])
    assert all(item is not None and item.value == b"x" for item in items)


@pytest.mark.parametrize("newer_first", [False, True])
async def test_batches_side_by_side_keep_the_newest_version(
        store: Store, monkeypatch: pytest.MonkeyPatch, newer_first: bool) -> None:
    """Two batches of the same keys imported at once, each over several slices (the loop
    runs between them): whichever arrives first, the newer records win."""
    monkeypatch.setattr(importer_module, "SLICE_KEYS", 100)
    importer = ArcImporter()
    await importer.begin(store, "m1", "a1", ARCS)
    old, new = _records(1000, 10, b"old"), _records(1000, 5000, b"new")
    first, second = (new, old) if newer_first else (old, new)
    await asyncio.gather(importer.apply(store, "m1", "s1", "a1", first),
                         importer.apply(store, "m1", "s1", "a1", second))
    items = await store.mget([b"k%05d" % i for i in range(1000)])
    assert all(item is not None and item.value == b"new" for item in items)


async def test_a_new_attempt_waits_for_the_batch_in_progress(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``begin`` of a new attempt comes while a batch of the old one is half ordered: the
    wipe runs after the whole batch, so nothing of the old attempt is left; a later batch
    of the old attempt is refused."""
    monkeypatch.setattr(importer_module, "SLICE_KEYS", 100)
    importer = ArcImporter()
    await importer.begin(store, "m1", "a1", ARCS)
    batch = asyncio.ensure_future(importer.apply(store, "m1", "s1", "a1",
                                                 _records(1000, 10, b"a1")))
    await asyncio.sleep(0)  # the batch has ordered its first slice, not the rest
    wiped = await importer.begin(store, "m1", "a2", ARCS)
    await batch
    assert wiped == 1000
    assert await store.mget([b"k00000", b"k00999"]) == [None, None]
    with pytest.raises(StaleEpoch):
        await importer.apply(store, "m1", "s1", "a1", _records(1, 2000, b"late"))

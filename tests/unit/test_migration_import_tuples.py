"""An import batch decoded with arrays as tuples (what the import route does, so the cyclic
GC stops tracking the records) is written exactly as a list-decoded one: every record, the
newest version winning, TTLs kept; both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from migration_target_store import target_store
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import RingSpec
from shardkv.node.migration.arcs import MovingArcs
from shardkv.node.migration.importer import ArcImporter
from shardkv.node.storage.store import Store


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with target_store(request.param, tmp_path, 1000) as opened:
        yield opened


async def test_tuple_records_import_like_lists(store: Store) -> None:
    arcs = MovingArcs.of(RingSpec(1, shards={"s1": 1}), RingSpec(2, shards={"s1": 1, "s2": 1}),
                         "s1", ["s2"])
    importer = ArcImporter()
    await importer.begin(store, "m1", "a1", arcs)
    expires = 4_000_000_000.0
    sent = wire.pack({"records": [
        ("put", b"a", b"old", False, None, 5),
        ("put", b"b", b"kept", False, expires, 6),
        ("put", b"a", b"new", False, None, 7),
        ("put", b"a", b"stale", False, None, 6),  # older than what it holds: skipped
        ("del", b"c", b"", False, None, 8),
    ]})
    records = wire.unpack(sent, use_list=False)["records"]
    assert type(records) is tuple and type(records[0]) is tuple
    answer = await importer.apply(store, "m1", "s1", "a1", records)
    assert answer["applied"] == 4
    a, b, c = await store.mget([b"a", b"b", b"c"])
    assert a is not None and a.value == b"new" and a.version > 1000
    assert b is not None and b.value == b"kept" and b.expires_at == expires
    assert c is None
    clock = importer.status()["copy_clock"]
    assert clock["counts"] == {"filter": 1, "write": 1} and clock["wal_entries"] == 1

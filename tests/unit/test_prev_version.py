"""``prev_version``: every write logs the version it replaced, so a watch replaying the WAL and
one following live events report the same value; records written before the field existed
read back with None (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog
from shardkv.node.watch.subscriber import Subscriber
from shardkv.node.watch.watch_filter import WatchFilter, entry_events

EVERYTHING = WatchFilter.parse(prefix="")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def config_for(engine: str, data_dir: Path) -> StoreConfig:
    return StoreConfig(data_dir=data_dir, engine=engine,
                       wal=WalOptions(fsync=FsyncPolicy.NEVER), ttl_sweep_interval_s=0)


@pytest.fixture(params=["memory", "sqlite"])
async def opened(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[Store, FakeClock]]:
    clock = FakeClock()
    store = await Store.open(config_for(request.param, tmp_path), clock=clock)
    try:
        yield store, clock
    finally:
        await store.close()


def history(store: Store) -> list[tuple[str, bytes, int, int | None]]:
    """(type, key, version, prev_version) of every event in the log, as a replaying watch
    sees them."""
    return [(e["type"], e["key"], e["version"], e["prev_version"])
            for entry in store.wal.read_from(1)
            for e in entry_events(entry, EVERYTHING, "s", values=False)]


async def test_each_write_records_the_version_it_replaced(
        opened: tuple[Store, FakeClock]) -> None:
    store, clock = opened
    live = Subscriber(EVERYTHING, "s", False, after=store.last_lsn)
    store.watch_hub.subscribe(live)
    v1 = await store.put(b"a", b"1")                       # new key
    v2 = await store.put(b"a", b"2")                       # blind overwrite
    v3 = await store.put(b"a", b"3", if_version=v2)        # compare-and-swap
    _, v4 = await store.incr(b"n", 5)
    _, v5 = await store.incr(b"n", 1)
    v6 = await store.expire(b"a", 10)
    v7 = await store.mput([(b"a", b"4"), (b"b", b"x"), (b"b", b"y")])
    result = await store.batch([BatchOp("delete", b"b"), BatchOp("put", b"b", b"z"),
                                BatchOp("put", b"n", b"0", if_version=v5)])
    v8 = result.version
    v9 = (await store.delete(b"a")).version
    v10 = (await store.mdelete([b"b", b"n", b"none"]))[1]
    clock.now += 100
    v11 = await store.put(b"t", b"ttl", ttl=1)
    clock.now += 5
    v12 = await store.put(b"t", b"again")                   # over an expired key: None
    v13 = await store.put(b"e", b"x", ttl=1)
    clock.now += 5
    assert await store.sweep_expired() == 1
    v14 = store.last_lsn
    expected = [
        ("put", b"a", v1, None), ("put", b"a", v2, v1), ("put", b"a", v3, v2),
        ("put", b"n", v4, None), ("put", b"n", v5, v4), ("put", b"a", v6, v3),
        ("put", b"a", v7, v6), ("put", b"b", v7, None), ("put", b"b", v7, v7),
        ("delete", b"b", v8, v7), ("put", b"b", v8, None), ("put", b"n", v8, v5),
        ("delete", b"a", v9, v7),
        ("delete", b"b", v10, v8), ("delete", b"n", v10, v8),
        ("put", b"t", v11, None), ("put", b"t", v12, None), ("put", b"e", v13, None),
        ("expire", b"e", v14, v13),
    ]
    assert history(store) == expected
    batches, _ = live.take()
    from_live = [(e["type"], e["key"], e["version"], e["prev_version"])
                 for batch in batches for e in batch.events]
    assert from_live == expected


async def test_a_blind_write_sees_the_version_still_in_flight(
        opened: tuple[Store, FakeClock]) -> None:
    """Two blind puts of one key submitted back to back: the second replaces the first,
    which is not applied yet (the pipeline's overlay answers)."""
    store, _ = opened
    first = store.put(b"k", b"1")
    second = store.put(b"k", b"2")
    v1, v2 = await asyncio.gather(first, second)
    assert sorted(history(store), key=lambda e: e[2]) == [
        ("put", b"k", min(v1, v2), None), ("put", b"k", max(v1, v2), min(v1, v2))]


def test_the_wire_form_old_and_new() -> None:
    new = Mutation(MutationKind.PUT, b"k", b"v", False, None, False, 41)
    assert len(new.to_wire()) == 7
    assert Mutation.from_wire(new.to_wire()) == new
    expired = Mutation(MutationKind.DELETE, b"k", expired=True, prev_version=3)
    assert Mutation.from_wire(expired.to_wire()) == expired
    # Unknown (absent) costs nothing on the wire: the old shapes.
    assert len(Mutation(MutationKind.PUT, b"k", b"v").to_wire()) == 5
    assert Mutation.from_wire([1, b"k", b"v", False, None]).prev_version is None
    assert Mutation.from_wire([2, b"k", b"", False, None, True]).prev_version is None


async def test_a_log_written_by_the_previous_format_reads_back_with_none(
        tmp_path: Path) -> None:
    """Entries whose payload is the previous encoder's (five- or six-element mutations),
    written through the real WAL, then recovered by a Store and replayed to a watch."""
    config = config_for("memory", tmp_path)
    wal = await WriteAheadLog.open(config.wal_dir, config.wal)
    old = [WalEntry(1, 1, (Mutation(MutationKind.PUT, b"a", b"1"),), 10.0),
           WalEntry(2, 1, (Mutation(MutationKind.PUT, b"a", b"2"),), 11.0),
           WalEntry(3, 1, (Mutation(MutationKind.DELETE, b"a", expired=True),), 12.0)]
    for entry in old:
        wire = [entry.lsn, entry.epoch, entry.ts,
                [[int(m.kind), m.key, m.value, m.compressed, m.expires_at]
                 + ([True] if m.expired else []) for m in entry.mutations]]
        object.__setattr__(entry, "payload", msgpack.packb(wire, use_bin_type=True))
        await wal.append(entry)
    await wal.close()
    store = await Store.open(config)
    try:
        assert store.last_lsn == 3
        v4 = await store.put(b"a", b"new")          # the new format after the old records
        v5 = await store.put(b"a", b"newer")
        assert history(store) == [("put", b"a", 1, None), ("put", b"a", 2, None),
                                  ("expire", b"a", 3, None), ("put", b"a", v4, None),
                                  ("put", b"a", v5, v4)]
    finally:
        await store.close()

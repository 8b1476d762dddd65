"""The Store's operations, against both engines: semantics, limits, conditions, ordering."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from shardkv.cluster.errors import (
    InvalidArgument,
    OutcomeUnknown,
    TooLarge,
    Unavailable,
    VersionMismatch,
)
from shardkv.cluster.limits import Limits
from shardkv.node.storage.store import BatchOp, Store, StoreConfig
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions


def config_for(engine: str, data_dir: Path, **overrides: object) -> StoreConfig:
    base = StoreConfig(
        data_dir=data_dir,
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.NEVER),
        ttl_sweep_interval_s=0,  # sweeps are run explicitly where a test wants one
    )
    return replace(base, **overrides)


@pytest.fixture(params=["memory", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def store(engine_name: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(config_for(engine_name, tmp_path))
    yield opened
    await opened.close()


async def test_put_get_versions_grow(store: Store) -> None:
    assert await store.get(b"a") is None
    v1 = await store.put(b"a", b"one")
    v2 = await store.put("b", "two")  # str keys and values are UTF-8
    v3 = await store.put(b"a", b"three")
    assert (v1, v2, v3) == (1, 2, 3)
    item = await store.get(b"a")
    assert (item.value, item.version, item.expires_at) == (b"three", 3, None)
    assert (await store.exists(b"b")).version == 2
    assert await store.exists(b"zz") is None
    assert store.last_lsn == 3
    assert store.applied_lsn == 3


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.put(b"", b"v"), InvalidArgument),
        (lambda s: s.put(b"k" * 1025, b"v"), InvalidArgument),
        (lambda s: s.put(123, b"v"), InvalidArgument),
        (lambda s: s.put(b"k", b"x" * 2048), TooLarge),
        (lambda s: s.put(b"k", 5), InvalidArgument),
        (lambda s: s.put(b"k", b"v", ttl=0), InvalidArgument),
        (lambda s: s.put(b"k", b"v", ttl=-1), InvalidArgument),
        (lambda s: s.put(b"k", b"v", ttl=True), InvalidArgument),
        (lambda s: s.put(b"k", b"v", if_version=-1), InvalidArgument),
        (lambda s: s.put(b"k", b"v", if_version=1, if_absent=True), InvalidArgument),
        (lambda s: s.delete(b""), InvalidArgument),
        (lambda s: s.delete(b"k", if_version="1"), InvalidArgument),
        (lambda s: s.incr(b"k", 1.5), InvalidArgument),
        (lambda s: s.incr(b"k", True), InvalidArgument),
        (lambda s: s.expire(b"k", 0), InvalidArgument),
        (lambda s: s.mput([]), InvalidArgument),
        (lambda s: s.mput([(b"a", b"1")] * 11), TooLarge),
        (lambda s: s.mput([(b"a", b"1" * 600), (b"b", b"1" * 600)]), TooLarge),
        (lambda s: s.mput([(b"a", b"1"), (b"", b"2")]), InvalidArgument),
        (lambda s: s.mdelete([]), InvalidArgument),
        (lambda s: s.mdelete([b"a"] * 11), TooLarge),
        (lambda s: s.mget([b"a"] * 10_001), TooLarge),
        (lambda s: s.mget([b"a", b""]), InvalidArgument),
        (lambda s: s.batch([]), InvalidArgument),
        (lambda s: s.batch([BatchOp("put", b"a", b"1")] * 11), TooLarge),
        (lambda s: s.batch([BatchOp("upsert", b"a", b"1")]), InvalidArgument),
        (
            lambda s: s.batch([BatchOp("put", b"a", b"1"), BatchOp("put", b"", b"1")]),
            InvalidArgument,
        ),
        (lambda s: s.batch([BatchOp("delete", b"a", ttl=3)]), InvalidArgument),
        (lambda s: s.scan(limit=0), InvalidArgument),
        (lambda s: s.scan(limit=10_001), InvalidArgument),
        (lambda s: s.scan(prefix=b"a", start=b"a"), InvalidArgument),
    ],
)
async def test_limit_violations_write_nothing(
    engine_name: str, tmp_path: Path, call, error: type[Exception]
) -> None:
    limits = Limits(max_value_bytes=1024, max_batch_ops=10, max_batch_bytes=1000)
    store = await Store.open(config_for(engine_name, tmp_path, limits=limits))
    try:
        await store.put(b"a", b"keep")
        with pytest.raises(error):
            await call(store)
        assert store.last_lsn == 1
        assert (await store.get(b"a")).value == b"keep"
    finally:
        await store.close()


async def test_compare_and_swap(store: Store) -> None:
    v1 = await store.put(b"k", b"1")
    v2 = await store.put(b"k", b"2", if_version=v1)
    with pytest.raises(VersionMismatch) as caught:
        await store.put(b"k", b"3", if_version=v1)
    assert caught.value.details == {"key": b"k", "current_version": v2}
    assert (await store.get(b"k")).value == b"2"
    # Version 0 means absent: a create-only condition.
    assert await store.put(b"new", b"x", if_version=0) == v2 + 1
    with pytest.raises(VersionMismatch):
        await store.put(b"new", b"y", if_version=0)


async def test_if_absent(store: Store) -> None:
    version = await store.put(b"k", b"first", if_absent=True)
    with pytest.raises(VersionMismatch) as caught:
        await store.put(b"k", b"second", if_absent=True)
    assert caught.value.details["current_version"] == version
    await store.delete(b"k")
    assert await store.put(b"k", b"third", if_absent=True) > version


async def test_delete(store: Store) -> None:
    v1 = await store.put(b"k", b"v")
    with pytest.raises(VersionMismatch):
        await store.delete(b"k", if_version=v1 + 7)
    result = await store.delete(b"k", if_version=v1)
    assert (result.deleted, result.version) == (True, v1 + 1)
    assert await store.get(b"k") is None
    # Deleting an absent key writes nothing and reports the current LSN.
    again = await store.delete(b"k")
    assert (again.deleted, again.version) == (False, v1 + 1)
    assert store.last_lsn == v1 + 1
    assert (await store.delete(b"k", if_version=0)).deleted is False
    with pytest.raises(VersionMismatch):
        await store.delete(b"k", if_version=v1)


async def test_incr(store: Store) -> None:
    assert await store.incr(b"n") == (1, 1)
    assert await store.incr(b"n", 41) == (42, 2)
    assert await store.incr(b"n", -50) == (-8, 3)
    assert (await store.get(b"n")).value == b"-8"
    await store.put(b"text", b"12a")
    with pytest.raises(InvalidArgument):
        await store.incr(b"text")
    await store.put(b"big", str(2**63 - 1).encode())
    with pytest.raises(InvalidArgument):
        await store.incr(b"big")
    assert await store.incr(b"big", -1) == (2**63 - 2, store.last_lsn)
    await store.put(b"empty", b"")
    with pytest.raises(InvalidArgument):
        await store.incr(b"empty")


async def test_mget_mput_mdelete(store: Store) -> None:
    version = await store.mput([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    items = await store.mget([b"b", b"missing", b"a"])
    assert [None if i is None else (i.value, i.version) for i in items] == [
        (b"2", version),
        None,
        (b"3", version),  # the later pair wins within one entry
    ]
    deleted, del_version = await store.mdelete([b"a", b"missing", b"a"])
    assert (deleted, del_version) == (1, version + 1)
    assert await store.mdelete([b"a", b"missing"]) == (0, version + 1)
    assert store.last_lsn == version + 1
    assert await store.mget([]) == []


async def test_batch_applies_atomically_with_one_version(store: Store) -> None:
    v0 = await store.put(b"x", b"old")
    result = await store.batch(
        [
            BatchOp("put", b"a", b"1", if_absent=True),
            BatchOp("put", b"x", b"new", if_version=v0),
            BatchOp("delete", b"x"),
            BatchOp("delete", b"never"),
            BatchOp("put", b"b", b"2", ttl=100),
        ]
    )
    version = v0 + 1
    assert result.version == version
    assert result.results == (
        {"op": "put", "key": b"a", "version": version},
        {"op": "put", "key": b"x", "version": version},
        {"op": "delete", "key": b"x", "deleted": True},
        {"op": "delete", "key": b"never", "deleted": False},
        {"op": "put", "key": b"b", "version": version},
    )
    assert await store.get(b"x") is None
    assert (await store.get(b"a")).version == version
    assert (await store.get(b"b")).expires_at is not None


async def test_batch_failed_condition_writes_nothing(store: Store) -> None:
    v1 = await store.put(b"x", b"1")
    await store.put(b"y", b"2")
    ops = [
        BatchOp("put", b"new", b"n"),
        BatchOp("delete", b"x", if_version=v1),
        BatchOp("put", b"y", b"3", if_version=v1),  # y is at v1 + 1
    ]
    with pytest.raises(VersionMismatch) as caught:
        await store.batch(ops)
    assert caught.value.details == {"index": 2, "key": b"y", "current_version": v1 + 1}
    assert store.last_lsn == v1 + 1
    assert await store.get(b"new") is None
    assert (await store.get(b"x")).value == b"1"


async def test_batch_of_only_absent_deletes_writes_nothing(store: Store) -> None:
    await store.put(b"k", b"v")
    result = await store.batch([BatchOp("delete", b"nope"), BatchOp("delete", b"nada")])
    assert result.version == 1
    assert [r["deleted"] for r in result.results] == [False, False]
    assert store.last_lsn == 1


async def test_scan_prefix_range_and_paging(store: Store) -> None:
    keys = [b"user:%03d" % i for i in range(25)] + [b"other", b"user;", b"\xff\xff", b"\xff\xfe"]
    await store.mput([(key, key.upper()) for key in keys])
    page = await store.scan(prefix=b"user:", limit=100)
    assert [k for k, _ in page.items] == sorted(k for k in keys if k.startswith(b"user:"))
    assert page.cursor is None
    assert page.items[0][1].value == b"USER:000"

    seen: list[bytes] = []
    cursor = None
    pages = 0
    while True:
        page = await store.scan(prefix=b"user:", cursor=cursor, limit=10)
        seen.extend(k for k, _ in page.items)
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted(k for k in keys if k.startswith(b"user:"))
    assert pages == 3

    ranged = await store.scan(start=b"user:010", end=b"user:013")
    assert [k for k, _ in ranged.items] == [b"user:010", b"user:011", b"user:012"]
    assert [k for k, _ in (await store.scan(prefix=b"\xff")).items] == [b"\xff\xfe", b"\xff\xff"]
    assert (await store.scan(start=b"z", end=b"a")).items == []
    everything = await store.scan(limit=1000)
    assert [k for k, _ in everything.items] == sorted(keys)


async def test_scan_cursor_survives_concurrent_writes(store: Store) -> None:
    await store.mput([(b"k%02d" % i, b"v") for i in range(10)])
    first = await store.scan(limit=5)
    await store.delete(b"k05")
    await store.put(b"k01a", b"behind the cursor")
    await store.put(b"k07a", b"ahead of the cursor")
    second = await store.scan(cursor=first.cursor, limit=100)
    assert [k for k, _ in second.items] == [b"k06", b"k07", b"k07a", b"k08", b"k09"]


async def test_large_values_are_compressed_and_round_trip(store: Store) -> None:
    value = b"compressible " * 2000
    version = await store.put(b"big", value)
    assert (await store.get(b"big")).value == value
    stored = await store._engine.get(b"big")
    assert stored.compressed and len(stored.value) < len(value) // 10
    assert (await store.scan(prefix=b"big")).items[0][1].value == value
    assert await store.expire(b"big", 60) == version + 1
    assert (await store.get(b"big")).value == value
    incompressible = random.Random(7).randbytes(4096)
    await store.put(b"raw", incompressible)
    assert not (await store._engine.get(b"raw")).compressed


async def test_reopen_keeps_values_and_versions(engine_name: str, tmp_path: Path) -> None:
    config = config_for(engine_name, tmp_path)
    store = await Store.open(config)
    await store.mput([(b"k%d" % i, b"v%d" % i) for i in range(50)])
    await store.put(b"k3", b"changed", ttl=3600)
    await store.delete(b"k4")
    await store.incr(b"counter", 9)
    before = await store.scan(limit=1000)
    last = store.last_lsn
    await store.close()

    reopened = await Store.open(config)
    try:
        assert reopened.last_lsn == last
        assert await reopened.scan(limit=1000) == before
        assert reopened.key_count == 50
        assert await reopened.put(b"k1", b"next") == last + 1
    finally:
        await reopened.close()


async def test_concurrent_compare_and_swap_increments_lose_nothing(
    engine_name: str, tmp_path: Path
) -> None:
    # fsync=always: the group-commit path, where many writers wait on one sync at once.
    store = await Store.open(
        config_for(engine_name, tmp_path, wal=WalOptions(fsync=FsyncPolicy.ALWAYS))
    )
    try:
        await store.put(b"counter", b"0")
        conflicts = 0

        async def add_one() -> None:
            nonlocal conflicts
            while True:
                item = await store.get(b"counter")
                try:
                    await store.put(
                        b"counter", b"%d" % (int(item.value) + 1), if_version=item.version
                    )
                    return
                except VersionMismatch:
                    conflicts += 1

        await asyncio.gather(*(add_one() for _ in range(40)))
        await asyncio.gather(*(store.incr(b"other") for _ in range(40)))
        assert (await store.get(b"counter")).value == b"40"
        assert (await store.get(b"other")).value == b"40"
        assert conflicts > 0  # the CAS path really was contended
        assert store.stats().wal.max_group_size > 1  # writers shared fsyncs
    finally:
        await store.close()


async def test_reads_wait_for_commit_but_conditions_see_pending_writes(store: Store) -> None:
    await store.put(b"k", b"old")
    gate_open = asyncio.Event()
    gate_entered = asyncio.Event()

    async def gate(entry: WalEntry) -> None:
        gate_entered.set()
        await gate_open.wait()

    store.set_commit_gate(gate)
    pending_put = asyncio.create_task(store.put(b"k", b"new", if_version=1))
    await asyncio.wait_for(gate_entered.wait(), 10)
    # Durable locally but not committed: no read may see it ...
    assert (await store.get(b"k")).value == b"old"
    assert store.last_lsn == 2 and store.applied_lsn == 1
    # ... but a conflicting condition is ordered after it and must fail once it commits.
    conflicting = asyncio.create_task(store.put(b"k", b"other", if_version=1))
    gate_open.set()
    assert await pending_put == 2
    with pytest.raises(VersionMismatch) as caught:
        await conflicting
    assert caught.value.details["current_version"] == 2
    assert (await store.get(b"k")).value == b"new"


async def test_a_failing_commit_gate_stops_writes(store: Store) -> None:
    await store.put(b"k", b"v")

    async def gate(entry: WalEntry) -> None:
        raise ConnectionError("lost the majority")

    store.set_commit_gate(gate)
    # The entry was ordered and logged before the gate failed: its fate is unknown, never
    # reported as a definite failure. The next write is refused before it is ordered.
    with pytest.raises(OutcomeUnknown):
        await store.put(b"k", b"w")
    with pytest.raises(Unavailable) as refused:
        await store.put(b"other", b"x")
    assert not isinstance(refused.value, OutcomeUnknown)
    assert (await store.get(b"k")).value == b"v"
    # A refusing gate is replication's verdict (a step-down), not a broken disk: the node's
    # write-failure monitor must not restart it for this (a demoted primary did, mid-rejoin).
    assert store.write_failure is None


async def test_a_failed_log_is_a_write_failure(store: Store) -> None:
    await store.put(b"k", b"v")
    await store.wal.close()  # every later append fails as an I/O error would
    with pytest.raises(Unavailable):
        await store.put(b"k", b"w")
    assert store.write_failure is not None
    assert (await store.get(b"k")).value == b"v"


async def test_epoch_is_written_and_only_grows(store: Store) -> None:
    await store.put(b"a", b"1")
    store.epoch = 3
    await store.put(b"b", b"2")
    with pytest.raises(ValueError, match="older"):
        store.epoch = 2
    epochs = [entry.epoch for entry in store.wal.read_from(1)]
    assert epochs == [1, 3]


async def test_stats_report_the_state(store: Store) -> None:
    await store.mput([(b"a", b"1"), (b"b", b"2")])
    await store.delete(b"a")
    stats = store.stats()
    assert (stats.last_lsn, stats.applied_lsn, stats.pending_writes) == (2, 2, 0)
    assert stats.wal.appended_entries == 2
    assert stats.snapshot_lsn is None
    assert stats.recovery.replayed_entries == 0


async def test_compare_and_swap_stays_exact_among_concurrent_blind_writes(
    engine_name: str, tmp_path: Path
) -> None:
    """Blind puts take no lock; a CAS that succeeds must still have compared against the
    write immediately before it in the log."""
    # Flushing every entry makes the sqlite engine read the table (an await) for conditions,
    # the window in which a blind write can slip in.
    store = await Store.open(config_for(engine_name, tmp_path, sqlite_flush_entries=1))
    try:
        await store.put(b"k", b"start")
        swaps: dict[int, int] = {}  # version written -> version compared against

        async def swapper(n: int) -> None:
            for _ in range(40):
                item = await store.get(b"k")
                try:
                    written = await store.put(b"k", b"cas%d" % n, if_version=item.version)
                except VersionMismatch:
                    continue
                swaps[written] = item.version

        async def blind(n: int) -> None:
            for i in range(10):
                await store.put(b"k", b"blind%d-%d" % (n, i))

        await asyncio.gather(*(swapper(n) for n in range(6)), *(blind(n) for n in range(3)))
        writes_of_k = [e.lsn for e in store.wal.read_from(1) if e.mutations[0].key == b"k"]
        previous = dict(zip(writes_of_k[1:], writes_of_k, strict=False))
        assert swaps, "no compare-and-swap succeeded"
        for written, compared in swaps.items():
            assert previous[written] == compared
    finally:
        await store.close()

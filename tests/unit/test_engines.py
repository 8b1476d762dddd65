"""One suite, both engines: the contract of ``shardkv.node.storage.engines.engine.Engine``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shardkv.node.storage.engines.engine import Engine, SnapshotRow, StoredItem
from shardkv.node.storage.engines.memory import MemoryEngine
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry


async def open_engine(kind: str, directory: Path, *, flush_entries: int = 3) -> Engine:
    if kind == "memory":
        return await MemoryEngine.open()
    # A tiny flush threshold makes the tests cross the buffer/table boundary often.
    return await SqliteEngine.open(directory, flush_entries=flush_entries, flush_interval_s=3600)


@pytest.fixture(params=["memory", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    opened = await open_engine(request.param, tmp_path / "sqlite")
    yield opened
    await opened.close()


def put(key: bytes, value: bytes = b"v", *, expires_at: float | None = None) -> Mutation:
    return Mutation(MutationKind.PUT, key, value, False, expires_at)


def delete(key: bytes) -> Mutation:
    return Mutation(MutationKind.DELETE, key)


class Log:
    """Builds consecutive entries, as the WAL would hand them to an engine."""

    def __init__(self, start: int = 0) -> None:
        self.lsn = start

    def entry(self, *mutations: Mutation) -> WalEntry:
        self.lsn += 1
        return WalEntry(self.lsn, 1, mutations, 0.0)


async def test_apply_sets_version_to_entry_lsn(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(put(b"a", b"1"), put(b"b", b"2")))
    await engine.apply(log.entry(put(b"a", b"3")))
    assert await engine.get(b"a") == StoredItem(b"3", False, 2, None)
    assert await engine.get(b"b") == StoredItem(b"2", False, 1, None)
    assert await engine.get(b"c") is None
    assert engine.applied_lsn == 2


async def test_delete_removes_and_noop_entry_advances_lsn(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(put(b"a")))
    await engine.apply(log.entry(delete(b"a"), delete(b"never-there")))
    await engine.apply(log.entry())  # an epoch-start no-op
    assert await engine.get(b"a") is None
    assert engine.applied_lsn == 3


async def test_apply_refuses_old_or_repeated_lsn(engine: Engine) -> None:
    await engine.apply(WalEntry(5, 1, (put(b"a"),)))
    with pytest.raises(ValueError, match="not after applied"):
        await engine.apply(WalEntry(5, 1, (put(b"a", b"again"),)))
    assert (await engine.get(b"a")).value == b"v"


async def test_get_many_keeps_order_and_duplicates(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(put(b"x", b"1"), put(b"y", b"2")))
    await engine.apply(log.entry(put(b"z", b"3")))
    await engine.apply(log.entry(put(b"w", b"4")))  # crosses the sqlite flush threshold
    await engine.apply(log.entry(delete(b"y")))
    items = await engine.get_many([b"z", b"nope", b"x", b"y", b"z"])
    assert [None if i is None else i.value for i in items] == [b"3", None, b"1", None, b"3"]


async def test_scan_is_ordered_half_open_and_limited(engine: Engine) -> None:
    log = Log()
    keys = [b"k%02d" % i for i in range(20)]
    for key in reversed(keys):
        await engine.apply(log.entry(put(key, key)))
    await engine.apply(log.entry(delete(b"k05"), put(b"k07", b"new")))
    page = await engine.scan(b"k03", b"k09", 100)
    assert [k for k, _ in page] == [b"k03", b"k04", b"k06", b"k07", b"k08"]
    assert dict(page)[b"k07"].value == b"new"
    assert [k for k, _ in await engine.scan(None, None, 3)] == keys[:3]
    assert [k for k, _ in await engine.scan(b"k18", None, 10)] == [b"k18", b"k19"]
    assert await engine.scan(b"k09", b"k03", 10) == []


async def test_scan_merges_unflushed_writes_with_table(tmp_path: Path) -> None:
    """The sqlite buffer can hide, replace and add keys relative to the table: a scan must
    return the merged view, never a buffered delete's old row nor fewer rows than asked."""
    engine = await SqliteEngine.open(tmp_path, flush_entries=10_000, flush_interval_s=3600)
    try:
        log = Log()
        await engine.apply(log.entry(*[put(b"%02d" % i) for i in range(10)]))
        await engine.flush()
        await engine.apply(log.entry(delete(b"00"), delete(b"01"), put(b"015"), put(b"02", b"x")))
        page = await engine.scan(None, None, 4)
        assert [k for k, _ in page] == [b"015", b"02", b"03", b"04"]
        assert page[1][1] == StoredItem(b"x", False, 2, None)
    finally:
        await engine.close()


async def test_expired_finds_due_keys_soonest_first(engine: Engine) -> None:
    log = Log()
    await engine.apply(
        log.entry(
            put(b"late", expires_at=300.0),
            put(b"soon", expires_at=100.0),
            put(b"mid", expires_at=200.0),
            put(b"forever"),
        )
    )
    assert await engine.expired(250.0, 10) == [(b"soon", 1), (b"mid", 1)]
    assert await engine.expired(250.0, 1) == [(b"soon", 1)]
    # Nothing is removed by looking, and a rewrite without TTL drops the key from expiry.
    await engine.apply(log.entry(put(b"soon")))
    assert await engine.expired(1000.0, 10) == [(b"mid", 1), (b"late", 1)]
    await engine.apply(log.entry(delete(b"mid")))
    assert await engine.expired(1000.0, 10) == [(b"late", 1)]
    assert await engine.expired(50.0, 10) == []


async def test_memory_expiry_heap_stays_bounded_under_ttl_rewrites() -> None:
    engine = await MemoryEngine.open()
    log = Log()
    for i in range(5000):
        await engine.apply(log.entry(put(b"k", expires_at=1000.0 + i)))
    assert len(engine._expiry_heap) <= 2 + 1024 + 2
    assert await engine.expired(10_000.0, 10) == [(b"k", 5000)]


async def collect(rows: AsyncIterator[SnapshotRow]) -> list[SnapshotRow]:
    return [row async for row in rows]


async def test_snapshot_view_is_frozen_while_applying_continues(engine: Engine) -> None:
    log = Log()
    for i in range(7):
        await engine.apply(log.entry(put(b"k%d" % i, b"old", expires_at=None if i else 50.0)))
    view = await engine.snapshot_view()
    await engine.apply(log.entry(put(b"k0", b"new"), delete(b"k1"), put(b"k9", b"new")))
    rows = await collect(view.rows)
    assert view.lsn == 7
    assert view.count == 7
    assert [r[0] for r in rows] == [b"k%d" % i for i in range(7)]
    assert rows[0] == (b"k0", b"old", False, 1, 50.0)
    assert {r[1] for r in rows} == {b"old"}
    assert (await engine.get(b"k0")).value == b"new"


async def test_snapshot_view_selects_keys_before_reading_rows(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(*(put(b"k%02d" % i, b"v%d" % i) for i in range(20))))
    asked: list[bytes] = []

    def odd_only(keys: list[bytes]) -> list[bool]:
        asked.extend(keys)
        return [int(key[1:]) % 2 == 1 for key in keys]

    view = await engine.snapshot_view(odd_only)
    await engine.apply(log.entry(delete(b"k01")))  # the view is still frozen
    rows = await collect(view.rows)
    assert view.count == 20
    assert asked == [b"k%02d" % i for i in range(20)]
    assert rows == [(b"k%02d" % i, b"v%d" % i, False, 1, None) for i in range(1, 20, 2)]


async def test_migration_view_reads_selected_rows_as_of_its_lsn_or_later(
        engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(*(put(b"k%02d" % i, b"old") for i in range(20))))
    view = await engine.migration_view(lambda keys: [key != b"k03" for key in keys])
    # Written after the view: each row shows up old or new (never a state before the view's
    # LSN), a deleted one may be gone, an unselected one never shows.
    await engine.apply(log.entry(put(b"k05", b"new"), delete(b"k07"), put(b"k03", b"new")))
    rows = {r[0]: r for r in await collect(view.rows)}
    assert view.lsn == 1 and view.count == 20
    assert set(rows) - {b"k07"} == {b"k%02d" % i for i in range(20)} - {b"k03", b"k07"}
    assert rows[b"k05"][1:4] in {(b"old", False, 1), (b"new", False, 2)}
    assert all(rows[k][1] == b"old" for k in rows if k != b"k05")


async def test_load_replaces_everything(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(put(b"gone"), put(b"kept", b"old")))
    await engine.apply(log.entry(put(b"zzz")))  # leave something unflushed for sqlite
    rows: list[SnapshotRow] = [
        (b"a", b"1", True, 40, None),
        (b"kept", b"2", False, 41, 99.0),
    ]
    await engine.load(iter(rows), 42)
    assert engine.applied_lsn == 42
    assert engine.key_count == 2
    assert await engine.get(b"gone") is None
    assert await engine.get(b"zzz") is None
    assert await engine.get(b"a") == StoredItem(b"1", True, 40, None)
    assert await engine.expired(100.0, 10) == [(b"kept", 41)]
    assert [r[0] for r in await collect((await engine.snapshot_view()).rows)] == [b"a", b"kept"]
    await engine.apply(WalEntry(43, 1, (put(b"b"),)))
    assert (await engine.get(b"b")).version == 43


async def test_key_count_tracks_puts_and_deletes(engine: Engine) -> None:
    log = Log()
    await engine.apply(log.entry(put(b"a"), put(b"b"), put(b"c")))
    await engine.apply(log.entry(put(b"a", b"again"), delete(b"b"), delete(b"nope")))
    await engine.apply(log.entry(put(b"d")))
    if isinstance(engine, SqliteEngine):
        await engine.flush()
    assert engine.key_count == 3


async def test_sqlite_resumes_from_its_committed_lsn(tmp_path: Path) -> None:
    engine = await SqliteEngine.open(tmp_path, flush_entries=2, flush_interval_s=3600)
    log = Log()
    await engine.apply(log.entry(put(b"a", b"1")))
    await engine.apply(log.entry(put(b"b", b"2")))  # flushed: threshold reached
    await engine.apply(log.entry(put(b"c", b"3")))  # buffered only
    assert engine.committed_lsn == 2
    # Simulate a crash: drop the connection without the flush a clean close does.
    engine._timer.cancel()
    await engine._conn.close()

    reopened = await SqliteEngine.open(tmp_path)
    try:
        assert reopened.applied_lsn == 2
        assert reopened.key_count == 2
        assert await reopened.get(b"c") is None
        assert (await reopened.get(b"b")).version == 2
    finally:
        await reopened.close()

    again = await SqliteEngine.open(tmp_path)
    await again.apply(WalEntry(3, 1, (put(b"c", b"3"),)))
    await again.close()  # a clean close flushes
    final = await SqliteEngine.open(tmp_path)
    try:
        assert final.applied_lsn == 3
        assert (await final.get(b"c")).version == 3
    finally:
        await final.close()


async def test_sqlite_reads_see_buffer_during_flush(tmp_path: Path) -> None:
    engine = await SqliteEngine.open(tmp_path, flush_entries=10_000, flush_interval_s=3600)
    try:
        await engine.apply(WalEntry(1, 1, (put(b"a", b"1"),)))
        await engine.flush()
        await engine.apply(WalEntry(2, 1, (delete(b"a"), put(b"b", b"2"))))
        flushing = asyncio.create_task(engine.flush())
        # Reads interleave with the flush's awaits: at every point the delete is visible.
        rounds = 0
        while not flushing.done():
            assert await engine.get(b"a") is None
            assert (await engine.get(b"b")).value == b"2"
            await asyncio.sleep(0)  # buffered reads never suspend: let the flush progress
            rounds += 1
        await flushing
        assert rounds > 0
        assert await engine.get(b"a") is None
        assert (await engine.get(b"b")).value == b"2"
        assert engine.key_count == 1
    finally:
        await engine.close()


async def test_memory_rows_round_trip_every_shape() -> None:
    """The memory engine packs small values with their header into one bytes object and keeps
    large ones as tuples: every field reads back the same either way, through every read."""
    from shardkv.node.storage.engines.memory import PACK_LIMIT

    engine = await MemoryEngine.open()
    shapes = {
        b"plain": (b"small", False, None),
        b"empty": (b"", False, None),
        b"zstd": (b"\x28\xb5\x2f\xfd-ish", True, None),
        b"ttl": (b"expiring", False, 4_000_000_000.5),
        b"ttl-zstd": (b"both", True, 4_000_000_001.25),
        b"large": (b"L" * (PACK_LIMIT + 1), False, None),
        b"large-ttl": (b"T" * (PACK_LIMIT + 1), True, 4_000_000_002.0),
    }
    mutations = tuple(Mutation(MutationKind.PUT, k, v, c, e) for k, (v, c, e) in shapes.items())
    big_lsn = 2**63 - 5  # versions use all 64 bits
    await engine.load([], big_lsn - 1)
    await engine.apply(WalEntry(big_lsn, 1, mutations))
    for key, (value, compressed, expires_at) in shapes.items():
        assert await engine.get(key) == StoredItem(value, compressed, big_lsn, expires_at)
    scanned = dict(await engine.scan(None, None, 100))
    assert scanned == {k: StoredItem(v, c, big_lsn, e) for k, (v, c, e) in shapes.items()}
    view = await engine.snapshot_view()
    rows = [row async for row in view.rows]
    assert rows == sorted((k, v, c, big_lsn, e) for k, (v, c, e) in shapes.items())
    reloaded = await MemoryEngine.open()
    await reloaded.load(rows, big_lsn)
    assert dict(await reloaded.scan(None, None, 100)) == scanned
    due = await reloaded.expired(5_000_000_000.0, 10)
    assert sorted(due) == [(b"large-ttl", big_lsn), (b"ttl", big_lsn), (b"ttl-zstd", big_lsn)]


async def test_applying_the_wire_form_matches_applying_entries(tmp_path: Path) -> None:
    """Recovery replays the log's msgpack form (``apply_wire``): every mutation shape gives
    the state ``apply`` gives, and a malformed entry is refused."""
    import msgpack

    ttl, big = 4_000_000_000.5, b"L" * 2000
    entries = [
        WalEntry(1, 1, (put(b"a", b"1"), put(b"b", b"2", expires_at=ttl),
                        Mutation(MutationKind.PUT, b"z", b"\x28\xb5", True), put(b"big", big))),
        WalEntry(2, 1, ()),
        WalEntry(3, 2, (delete(b"a"), Mutation(MutationKind.DELETE, b"b", expired=True),
                        put(b"c", b"3", expires_at=ttl + 1), delete(b"never"))),
    ]
    states = []
    for index, wire in enumerate([False, True]):
        for kind in ("memory", "sqlite"):
            engine = await open_engine(kind, tmp_path / f"sqlite-{index}")
            for entry in entries:
                if wire:
                    await engine.apply_wire(msgpack.unpackb(msgpack.packb(entry.to_wire())))
                else:
                    await engine.apply(entry)
            states.append((engine.applied_lsn, await engine.scan(None, None, 10),
                           await engine.expired(ttl + 10, 10)))
            for bad in ([3, 1, 0.0, []], [4, 1, 0.0, [[9, b"k", b"v", False, None]]],
                        [4, 1, 0.0, [[1, "text key", b"v", False, None]]], [4, 1, 0.0, [[1]]]):
                with pytest.raises((ValueError, TypeError)):
                    await engine.apply_wire(bad)
            await engine.close()
    assert states[0][0] == 3 and len(states[0][1]) == 3
    assert all(state == states[0] for state in states)


async def test_an_engine_without_synchronous_reads_refuses_them(tmp_path) -> None:
    from shardkv.node.storage.engines.sqlite import SqliteEngine

    engine = await SqliteEngine.open(tmp_path)
    try:
        assert engine.sync_reads is False
        with pytest.raises(TypeError, match="sync_reads is False"):
            engine.live_version(b"k", 0.0)
    finally:
        await engine.close()

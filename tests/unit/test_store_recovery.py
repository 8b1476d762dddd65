"""Recovery: snapshot + WAL replay, SQLite resuming from its applied LSN, and the failures
that must stop a node instead of losing acknowledged writes."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from shardkv.cluster.errors import OutcomeUnknown
from shardkv.node.storage.engines.sqlite import SqliteEngine
from shardkv.node.storage.recovery import RecoveryError
from shardkv.node.storage.store import Item, Store, StoreConfig
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalCorruption, WalOptions


def config_for(engine: str, data_dir: Path, **overrides: object) -> StoreConfig:
    base = StoreConfig(
        data_dir=data_dir,
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.NEVER),
        ttl_sweep_interval_s=0,
    )
    return replace(base, **overrides)


@pytest.fixture(params=["memory", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


async def crash(store: Store) -> None:
    """Stop like a killed process would: the WAL keeps what it acknowledged (it was written
    before the writers were answered), but the engine is abandoned without a final flush."""
    await store._sweeper.stop()
    await store._pipeline.close()
    await store._wal.close()
    engine = store._engine
    if isinstance(engine, SqliteEngine):
        engine._timer.cancel()
        await engine._conn.close()
    store._closed = True


async def everything(store: Store) -> list[tuple[bytes, Item]]:
    return (await store.scan(limit=10_000)).items


async def test_snapshot_then_replay_restores_state_and_versions(
    engine_name: str, tmp_path: Path
) -> None:
    config = config_for(engine_name, tmp_path, sqlite_flush_interval_s=3600)
    store = await Store.open(config)
    await store.mput([(b"k%03d" % i, b"v%d" % i) for i in range(200)])
    await store.put(b"ttl", b"x", ttl=3600)
    meta = await store.snapshot_now()
    assert (meta.lsn, meta.count) == (2, 201)
    for i in range(0, 200, 10):
        await store.put(b"k%03d" % i, b"after")
    await store.mdelete([b"k001", b"k002"])
    await store.incr(b"n", 3)
    expected, last = await everything(store), store.last_lsn
    await crash(store)

    reopened = await Store.open(config)
    try:
        report = reopened.stats().recovery
        if engine_name == "memory":
            assert (report.snapshot_lsn, report.snapshot_keys) == (2, 201)
            assert report.replayed_entries == last - 2
        assert report.last_lsn == last
        assert await everything(reopened) == expected
        assert reopened.last_lsn == last
        assert await reopened.put(b"next", b"1") == last + 1
    finally:
        await reopened.close()


async def test_sqlite_resumes_replay_after_its_applied_lsn(tmp_path: Path) -> None:
    config = config_for(
        "sqlite", tmp_path, sqlite_flush_entries=10_000, sqlite_flush_interval_s=3600
    )
    store = await Store.open(config)
    for i in range(10):
        await store.put(b"k%d" % i, b"v")
    await store._engine.flush()
    for i in range(5):
        await store.put(b"k%d" % i, b"newer")
    expected = await everything(store)
    await crash(store)

    reopened = await Store.open(config)
    try:
        report = reopened.stats().recovery
        assert report.engine_lsn_before_replay == 10
        assert report.replayed_entries == 5
        assert await everything(reopened) == expected
    finally:
        await reopened.close()
    # A clean close flushes: nothing left to replay.
    again = await Store.open(config)
    try:
        assert again.stats().recovery.replayed_entries == 0
        assert await everything(again) == expected
    finally:
        await again.close()


async def test_snapshot_compacts_the_wal_and_recovery_uses_both(
    engine_name: str, tmp_path: Path
) -> None:
    config = config_for(
        engine_name,
        tmp_path,
        wal=WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=1024),
        retain_wal_entries=10,
    )
    store = await Store.open(config)
    for i in range(300):
        await store.put(b"k%d" % (i % 40), b"value-%d" % i)
    segments_before = store.stats().wal.segments
    meta = await store.snapshot_now()
    assert meta.lsn == 300
    assert store.stats().wal.segments < segments_before
    assert store.wal.first_lsn > 1
    assert store.wal.first_lsn <= 300 - 10 + 1  # the retained tail is still there
    for i in range(5):
        await store.put(b"tail%d" % i, b"t")
    expected = await everything(store)
    await store.close()

    reopened = await Store.open(config)
    try:
        assert await everything(reopened) == expected
        if engine_name == "memory":
            assert reopened.stats().recovery.snapshot_lsn == 300
            assert reopened.stats().recovery.replayed_entries == 5
    finally:
        await reopened.close()


async def test_missing_snapshot_behind_a_compacted_wal_is_an_error(tmp_path: Path) -> None:
    config = config_for(
        "memory",
        tmp_path,
        wal=WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=512),
        retain_wal_entries=0,
    )
    store = await Store.open(config)
    for i in range(100):
        await store.put(b"k%d" % i, b"v" * 20)
    await store.snapshot_now()
    await store.put(b"after", b"v")
    await store.close()
    shutil.rmtree(config.snapshot_dir)
    with pytest.raises(RecoveryError, match="missing"):
        await Store.open(config)


async def test_damaged_newest_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    config = config_for("memory", tmp_path)
    store = await Store.open(config)
    await store.mput([(b"a%d" % i, b"1") for i in range(50)])
    first = await store.snapshot_now()
    await store.mput([(b"b%d" % i, b"2") for i in range(50)])
    newest = await store.snapshot_now()
    await store.put(b"c", b"3")
    expected = await everything(store)
    await store.close()

    data = bytearray(newest.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.path.write_bytes(bytes(data))
    reopened = await Store.open(config)
    try:
        assert reopened.stats().recovery.snapshot_lsn == first.lsn
        assert await everything(reopened) == expected
    finally:
        await reopened.close()


async def test_wal_corruption_before_the_tail_stops_recovery(
    engine_name: str, tmp_path: Path
) -> None:
    config = config_for(
        engine_name, tmp_path, wal=WalOptions(fsync=FsyncPolicy.NEVER, segment_bytes=1024)
    )
    store = await Store.open(config)
    for i in range(100):
        await store.put(b"k%d" % i, b"v" * 30)
    await crash(store)
    if engine_name == "sqlite":
        shutil.rmtree(config.sqlite_dir)  # force a replay from the start of the log
    oldest = sorted(p for p in config.wal_dir.iterdir() if p.is_file())[0]
    data = bytearray(oldest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    oldest.write_bytes(bytes(data))
    with pytest.raises(WalCorruption):
        await Store.open(config)


async def test_a_lost_wal_restarts_after_the_snapshot(tmp_path: Path) -> None:
    config = config_for("memory", tmp_path)
    store = await Store.open(config)
    await store.mput([(b"a", b"1"), (b"b", b"2")])
    await store.put(b"c", b"3")
    await store.snapshot_now()
    await store.close()
    shutil.rmtree(config.wal_dir)

    reopened = await Store.open(config)
    try:
        assert reopened.last_lsn == 2
        assert [k for k, _ in await everything(reopened)] == [b"a", b"b", b"c"]
        assert await reopened.put(b"d", b"4") == 3
    finally:
        await reopened.close()
    again = await Store.open(config)
    try:
        assert (await again.get(b"d")).version == 3
    finally:
        await again.close()


async def test_snapshots_are_taken_by_logged_bytes(engine_name: str, tmp_path: Path) -> None:
    config = config_for(engine_name, tmp_path, snapshot_wal_bytes=4096, keep_snapshots=2)
    store = await Store.open(config)
    try:
        # Writing drives snapshots: each one starts when 4 KiB were logged since the last.
        deadline = time.monotonic() + 20
        written = 0
        while store.stats().snapshots_taken < 3:
            assert time.monotonic() < deadline, "snapshots were not taken"
            await store.put(b"k%d" % (written % 20), b"v" * 200)
            written += 1
        # Never more often than the bytes allow: one snapshot per 4 KiB logged (each put logs
        # at least its key and value), plus the one that may have started at the threshold.
        logged = written * (200 + len(b"k00"))
        assert store.stats().snapshots_taken <= logged // 4096 + 1
        await store._snapshotter.close()  # let a snapshot in progress finish
        assert len(list(config.snapshot_dir.glob("*.snap"))) == 2  # keep_snapshots
        assert store.stats().snapshot_lsn is not None
    finally:
        await store.close()


async def test_acknowledged_writes_survive_a_crash_with_fsync_always(
    engine_name: str, tmp_path: Path
) -> None:
    config = config_for(
        engine_name,
        tmp_path,
        wal=WalOptions(fsync=FsyncPolicy.ALWAYS),
        sqlite_flush_interval_s=3600,
    )
    store = await Store.open(config)
    versions = await asyncio.gather(*(store.put(b"k%d" % i, b"v%d" % i) for i in range(50)))
    await crash(store)
    reopened = await Store.open(config)
    try:
        for i, version in enumerate(versions):
            item = await reopened.get(b"k%d" % i)
            assert (item.value, item.version) == (b"v%d" % i, version)
    finally:
        await reopened.close()


# -- the seams replication builds on ---------------------------------------------------------


async def test_a_replica_store_replays_its_primarys_entries(
    engine_name: str, tmp_path: Path
) -> None:
    primary = await Store.open(config_for("memory", tmp_path / "primary"))
    replica = await Store.open(config_for(engine_name, tmp_path / "replica"))
    try:
        await primary.mput([(b"a", b"1"), (b"b", b"2")])
        primary.epoch = 4
        await primary.put(b"a", b"3", ttl=3600)
        await primary.delete(b"b")
        for entry in primary.wal.read_from(1):
            await replica.submit_replicated(entry)
        assert await everything(replica) == await everything(primary)
        assert (replica.last_lsn, replica.epoch) == (3, 4)
        with pytest.raises(ValueError, match="next lsn"):
            replica.submit_replicated(next(primary.wal.read_from(1)))
    finally:
        await primary.close()
        await replica.close()


async def test_install_snapshot_replaces_the_state_and_restarts_the_log(
    engine_name: str, tmp_path: Path
) -> None:
    source = await Store.open(config_for("memory", tmp_path / "source"))
    await source.mput([(b"k%d" % i, b"v%d" % i) for i in range(30)])
    source.epoch = 2
    await source.put(b"k0", b"changed")
    meta = await source.snapshot_now()
    expected = await everything(source)
    await source.close()

    config = config_for(engine_name, tmp_path / "target")
    target = await Store.open(config)
    try:
        for i in range(5):
            await target.put(b"old%d" % i, b"diverged history")
        config.snapshot_dir.mkdir(parents=True)
        installed = replace(meta, path=config.snapshot_dir / meta.path.name)
        shutil.copy(meta.path, installed.path)
        await target.install_snapshot(installed)
        assert await everything(target) == expected
        assert (target.last_lsn, target.epoch) == (meta.lsn, 2)
        assert target.stats().snapshot_lsn == meta.lsn
        assert await target.put(b"new", b"x") == meta.lsn + 1
    finally:
        await target.close()
    reopened = await Store.open(config)
    try:
        assert [k for k, _ in await everything(reopened)] == sorted(
            [k for k, _ in expected] + [b"new"]
        )
    finally:
        await reopened.close()


async def test_truncating_an_unacknowledged_suffix_reopens_the_log(
    engine_name: str, tmp_path: Path
) -> None:
    config = config_for(engine_name, tmp_path)
    store = await Store.open(config)
    try:
        await store.put(b"k", b"acknowledged")

        async def no_majority(entry: WalEntry) -> None:
            raise ConnectionError("the replicas are gone")

        store.set_commit_gate(no_majority)
        with pytest.raises(OutcomeUnknown):  # logged here, fate unknown: never "not done"
            await store.put(b"k", b"never acknowledged")
        assert store.last_lsn == 2
        with pytest.raises(ValueError, match="applied"):
            await store.truncate_log_after(0)
        await store.truncate_log_after(1)
        store.set_commit_gate(None)
        assert store.last_lsn == 1
        assert await store.put(b"k", b"new history") == 2
    finally:
        await store.close()
    reopened = await Store.open(config)
    try:
        assert (await reopened.get(b"k")).value == b"new history"
    finally:
        await reopened.close()

"""Disk use that follows live data: byte retention, the snapshot trigger, the low-disk guard,
and SQLite compaction (``snapshots/retention.py``, ``disk_guard.py``, ``snapshotter.py``)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from shardkv.cluster.errors import DiskFull, ErrorCode, InvalidArgument, error_from_dict
from shardkv.node.storage.disk_guard import DiskGuard, auto_low_disk_bytes
from shardkv.node.storage.disk_report import disk_report
from shardkv.node.storage.snapshots.retention import (
    DEFAULT_RETAIN_FLOOR_BYTES,
    SegmentExtent,
    SnapshotTrigger,
    retain_budget,
    wal_cut_lsn,
)
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions

MiB = 1 << 20


def config_for(engine: str, data_dir: Path, **overrides: object) -> StoreConfig:
    base = StoreConfig(
        data_dir=data_dir,
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.NEVER),
        ttl_sweep_interval_s=0,
        low_disk_bytes=0,
    )
    return replace(base, **overrides)


@pytest.fixture(params=["memory", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


# ------------------------------------------------------------------------------ arithmetic

SEGMENTS = [SegmentExtent(1, 100), SegmentExtent(11, 100), SegmentExtent(21, 100),
            SegmentExtent(31, 40)]  # the last is the active one


def test_byte_budget_wins_when_it_keeps_less_than_the_entry_count() -> None:
    # 100,000 entries would keep everything; 250 bytes keep the two newest full segments.
    assert wal_cut_lsn(SEGMENTS, 35, 35, retain_entries=100_000, retain_bytes=250) == 11
    assert wal_cut_lsn(SEGMENTS, 35, 35, retain_entries=100_000, retain_bytes=150) == 21
    assert wal_cut_lsn(SEGMENTS, 35, 35, retain_entries=100_000, retain_bytes=0) == 31


def test_entry_count_wins_when_it_keeps_less_than_the_byte_budget() -> None:
    assert wal_cut_lsn(SEGMENTS, 35, 35, retain_entries=5, retain_bytes=10 * MiB) == 31


def test_never_cuts_past_the_snapshot() -> None:
    assert wal_cut_lsn(SEGMENTS, 35, 15, retain_entries=0, retain_bytes=0) == 16
    assert wal_cut_lsn([], 0, 0, retain_entries=0, retain_bytes=0) == 1


def test_default_budget_follows_the_snapshot_and_the_disk() -> None:
    plenty = 100 << 30
    assert retain_budget(None, 1 * MiB, plenty, 0) == DEFAULT_RETAIN_FLOOR_BYTES
    assert retain_budget(None, 500 * MiB, plenty, 0) == 500 * MiB
    assert retain_budget(8 * MiB, 500 * MiB, plenty, 0) == 8 * MiB
    # Never more than half the room above the floor, configured or not.
    assert retain_budget(None, 0, 100 * MiB, 20 * MiB) == 40 * MiB
    assert retain_budget(1 << 40, 0, 100 * MiB, 20 * MiB) == 40 * MiB
    assert retain_budget(None, 0, 10 * MiB, 20 * MiB) == 0


def test_snapshot_is_due_by_bytes_or_by_ratio_to_its_size() -> None:
    trigger = SnapshotTrigger(wal_bytes=128 * MiB, ratio=4.0, min_wal_bytes=16 * MiB)
    assert trigger.due(128 * MiB, 100 * MiB) == "wal_bytes"
    assert trigger.due(17 * MiB, 4 * MiB) == "ratio"  # overwrite-heavy: 4 MB of live data
    assert trigger.due(15 * MiB, 1 * MiB) is None  # the minimum holds off tiny snapshots
    assert trigger.due(16 * MiB, 0) == "ratio"  # no snapshot yet: the first after the minimum
    assert trigger.due(300 * MiB // 4, 100 * MiB) is None
    assert SnapshotTrigger(128 * MiB, 0, 0).due(100 * MiB, 1) is None  # ratio off


# ---------------------------------------------------------------------------------- guard


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.now = 0.0
        self.reads = 0

    def read(self, _path: Path) -> tuple[int, int]:
        self.reads += 1
        return self.free, 1 << 40


def test_guard_asks_for_a_trim_first_then_refuses_then_recovers(tmp_path: Path) -> None:
    disk = FakeDisk(free=300)
    lows: list[float] = []
    guard = DiskGuard(tmp_path, 100, on_low=lambda: lows.append(disk.now), refresh_s=1.0,
                      refresh_bytes=1000, read_free=disk.read, clock=lambda: disk.now)
    guard.check()
    assert not lows  # 300 >= 2 x 100: nothing to do
    disk.free, disk.now = 150, 2.0
    guard.check()  # under twice the floor: trim first, still accepting
    assert lows == [2.0]
    guard.note_logged(60)  # estimated 90 free: under the floor before the next statvfs
    with pytest.raises(DiskFull) as refused:
        guard.check()
    assert guard.refusing and guard.refused == 1
    error = refused.value
    assert not error.retryable and error.code is ErrorCode.DISK_FULL
    assert error.http_status == 507
    assert str(tmp_path) in error.message and error.details["floor_bytes"] == 100
    assert isinstance(error_from_dict(error.to_dict()), DiskFull)  # clients see the type
    disk.free, disk.now = 500, 4.0  # an operator freed space; the refresh notices
    guard.check()
    assert not guard.refusing


def test_guard_off_and_auto_floor(tmp_path: Path) -> None:
    disk = FakeDisk(free=0)
    guard = DiskGuard(tmp_path, 0, on_low=lambda: None, read_free=disk.read)
    guard.check()  # floor 0: never refuses
    assert auto_low_disk_bytes(1 << 40) == 256 * MiB
    assert auto_low_disk_bytes(1000 * MiB) == 50 * MiB


# ---------------------------------------------------------------------------------- store


async def test_overwrite_workload_keeps_the_wal_bounded(engine_name: str, tmp_path: Path) -> None:
    """20,000 keys... scaled down: 2,000 keys of 200 bytes overwritten in batches of 50,
    with 64 KiB segments, a 128 KiB byte budget and the ratio rule: the WAL never holds
    more than budget + the bytes due before a snapshot + one segment, whatever was logged."""
    segment = 64 << 10
    config = config_for(engine_name, tmp_path, wal=WalOptions(fsync=FsyncPolicy.NEVER,
                                                             segment_bytes=segment),
                        retain_wal_bytes=128 << 10, snapshot_min_wal_bytes=256 << 10)
    store = await Store.open(config)
    try:
        value = os.urandom(100).hex().encode()  # 200 bytes, incompressible as a whole
        peak = 0
        for round_ in range(40):
            for start in range(0, 2000, 50):
                await store.mput([(b"key%05d" % k, value) for k in range(start, start + 50)])
            for _ in range(200):  # background snapshots finish before we measure
                if not store.snapshotter.running:
                    break
                await asyncio.sleep(0.01)
            peak = max(peak, store.wal.stats().bytes)
            assert round_ < 2 or store.snapshotter.taken > 0
        logged = store.wal.stats().appended_bytes
        snapshot = store.snapshotter.latest_bytes
        bound = (128 << 10) + max(256 << 10, 4 * snapshot) + 2 * segment
        assert logged > 10 * bound  # the workload logged far more than the bound
        assert peak <= bound, (peak, bound)
        report = disk_report(store)
        assert report["wal"]["retained_bytes"] == store.wal.stats().bytes
        assert report["snapshot"]["bytes"] == snapshot > 0
        assert report["snapshot"]["last"]["reason"] in ("ratio", "wal_bytes")
        assert await store.get(b"key00000") is not None
    finally:
        await store.close()


async def test_low_disk_refuses_writes_and_keeps_data(engine_name: str, tmp_path: Path) -> None:
    store = await Store.open(config_for(engine_name, tmp_path))
    try:
        await store.put(b"a", b"1")
        store.snapshotter.guard.low_bytes = 1 << 62  # more than any disk has free
        with pytest.raises(DiskFull):
            await store.put(b"b", b"2")
        with pytest.raises(DiskFull):
            await store.mput([(b"c", b"3")])
        assert (await store.get(b"a")).value == b"1"
        assert await store.get(b"b") is None
        assert disk_report(store)["guard"]["refusing"] is True
        store.snapshotter.guard.low_bytes = 0
        await store.put(b"b", b"2")
        assert (await store.get(b"b")).value == b"2"
    finally:
        await store.close()


async def test_a_store_opened_on_a_full_disk_serves_reads_and_refuses_writes(
    engine_name: str, tmp_path: Path
) -> None:
    store = await Store.open(config_for(engine_name, tmp_path))
    await store.put(b"a", b"1")
    await store.close()
    store = await Store.open(config_for(engine_name, tmp_path, low_disk_bytes=1 << 62))
    try:
        assert (await store.get(b"a")).value == b"1"
        with pytest.raises(DiskFull):
            await store.put(b"b", b"2")
    finally:
        await store.close()


async def test_snapshot_report_and_keep_snapshots(engine_name: str, tmp_path: Path) -> None:
    store = await Store.open(config_for(engine_name, tmp_path, keep_snapshots=1))
    try:
        for i in range(3):
            await store.put(b"k%d" % i, b"v")
            _meta, report = await store.snapshotter.take_report("admin")
            assert report.lsn == i + 1 and report.reason == "admin" and report.bytes > 0
        assert len(list(config_for(engine_name, tmp_path).snapshot_dir.glob("*.snap"))) == 1
    finally:
        await store.close()


async def test_sqlite_compaction_gives_free_pages_back(tmp_path: Path) -> None:
    # One flush per entry: otherwise the puts and deletes can meet in the engine's write
    # buffer and never reach the file.
    store = await Store.open(config_for("sqlite", tmp_path, sqlite_flush_entries=1))
    try:
        big = os.urandom(4000)  # incompressible: stored as is
        for start in range(0, 1000, 100):
            await store.mput([(b"k%04d" % k, big) for k in range(start, start + 100)])
        await store.mdelete([b"k%04d" % k for k in range(1000)])
        await store.put(b"kept", b"v")
        report = await store.snapshotter.compact()
        assert report.bytes_after < report.bytes_before
        assert report.reclaimed_bytes > 1 * MiB
        assert report.free_pages_after == 0
        assert (await store.get(b"kept")).value == b"v"
        assert await store.get(b"k0001") is None
    finally:
        await store.close()


async def test_compaction_is_refused_on_the_memory_engine(tmp_path: Path) -> None:
    store = await Store.open(config_for("memory", tmp_path))
    try:
        with pytest.raises(InvalidArgument, match="sqlite"):
            await store.snapshotter.compact()
    finally:
        await store.close()


# --------------------------------------------------------------------------------- config


def test_node_config_reads_the_disk_settings(tmp_path: Path) -> None:
    from shardkv.node.config import ConfigError, load_config

    config = load_config({"data_dir": str(tmp_path), "keep_snapshots": "3",
                          "retain_wal_bytes": "8_388_608", "low_disk_bytes": "auto"},
                         {"SHARDKV_SNAPSHOT_WAL_RATIO": "2.5"})
    assert config.keep_snapshots == 3 and config.retain_wal_bytes == 8 << 20
    assert config.low_disk_bytes is None and config.snapshot_wal_ratio == 2.5
    defaults = load_config({"data_dir": str(tmp_path)}, {})
    assert defaults.retain_wal_bytes is None and defaults.keep_snapshots == 2
    with pytest.raises(ConfigError, match="keep_snapshots"):
        load_config({"data_dir": str(tmp_path), "keep_snapshots": "0"}, {})
    with pytest.raises(ConfigError, match="low_disk_bytes"):
        load_config({"data_dir": str(tmp_path), "low_disk_bytes": "lots"}, {})

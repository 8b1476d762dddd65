"""Power loss around snapshots: a snapshot the log was compacted behind must be on disk, and a
snapshot received from a primary must be complete under its name before the log restarts
after it. Each test names the fsync it guards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shardkv.node.replication.replica_log import stage_and_install
from shardkv.node.storage.snapshots.snapshot import check_snapshot, write_snapshot
from shardkv.node.storage.snapshots.transfer import iter_snapshot_chunks, receive_snapshot
from shardkv.node.storage.store import Store, StoreConfig
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog
from simulated_disk import SimulatedDisk


async def rows(count: int) -> AsyncIterator[tuple[bytes, bytes, bool, int, None]]:
    for i in range(count):
        yield (b"k%05d" % i, b"v" * 50, False, i + 1, None)


async def chunks(path: Path) -> AsyncIterator[bytes]:
    for chunk in iter_snapshot_chunks(path, 1024):
        yield chunk


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_a_snapshot_behind_a_compacted_log_survives_power_loss(
    engine: str, tmp_path: Path
) -> None:
    """Guards the snapshot file's fsync and its rename + directory fsync
    (``snapshot._finish`` through ``durable_file.sync_file`` and ``install``), and the creation
    of the snapshot directory (``durable_file.ensure_dir``). The WAL segments behind the
    snapshot are deleted durably, so a snapshot lost to the page cache loses data. With the
    SQLite engine its files (not fsynced per commit: ``synchronous=NORMAL``) come back empty, so
    this also
    checks that recovery does not need them."""
    config = StoreConfig(
        data_dir=tmp_path / "node",
        engine=engine,
        wal=WalOptions(fsync=FsyncPolicy.ALWAYS, segment_bytes=1024),
        retain_wal_entries=5,
        ttl_sweep_interval_s=0,
    )
    with SimulatedDisk(tmp_path) as disk:
        store = await Store.open(config)
        for i in range(120):
            await store.put(b"k%d" % (i % 30), b"value-%d" % i)
        meta = await store.snapshot_now()
        assert store.wal.first_lsn > 1  # the log before the snapshot is gone
        await store.put(b"after", b"snapshot")
        expected = (await store.scan(limit=1000)).items
        disk.cut_power()
        await store.close()
    disk.reboot()
    reopened = await Store.open(config)
    try:
        assert reopened.stats().recovery.snapshot_lsn == meta.lsn
        assert (await reopened.scan(limit=1000)).items == expected
    finally:
        await reopened.close()


async def test_a_received_snapshot_survives_power_loss(tmp_path: Path) -> None:
    """Guards ``transfer.receive_snapshot``: the received file's fsync and its rename +
    directory fsync."""
    sent = await write_snapshot(tmp_path / "primary", 77, 3, rows(300))
    replica = tmp_path / "replica"
    with SimulatedDisk(replica) as disk:
        meta = await receive_snapshot(replica, 77, chunks(sent.path))
        disk.cut_power()
    disk.reboot()
    assert check_snapshot(meta.path).count == 300


async def test_a_snapshot_installed_on_a_replica_survives_power_loss(tmp_path: Path) -> None:
    """Guards ``replica_log.stage_and_install``: the WAL restarts after the snapshot (its old
    entries are gone), so the snapshot must be durable under its final name, which needs the
    directory fsync after the move out of staging."""
    sent = await write_snapshot(tmp_path / "primary", 50, 2, rows(200))
    node = tmp_path / "node"
    with SimulatedDisk(node) as disk:
        wal = await WriteAheadLog.open(node / "wal", WalOptions(fsync=FsyncPolicy.ALWAYS))
        meta = await stage_and_install(node / "snapshots", chunks(sent.path), 50, 2, wal)
        disk.cut_power()
        await wal.close()
    disk.reboot()
    assert check_snapshot(meta.path).lsn == 50
    wal = await WriteAheadLog.open(node / "wal")
    try:
        assert wal.last_lsn == 50
    finally:
        await wal.close()

"""Power loss under the write-ahead log: an acknowledged append survives, whatever the page
cache held. Each test names the fsync it guards; removing that fsync makes it fail (checked by
hand, see docs/testing.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog
from simulated_disk import SimulatedDisk

SMALL_SEGMENTS = WalOptions(fsync=FsyncPolicy.ALWAYS, segment_bytes=2048)


def entry(lsn: int, epoch: int = 1) -> WalEntry:
    return WalEntry(lsn, epoch, (Mutation(MutationKind.PUT, b"key-%d" % lsn, b"v" * 100),),
                    ts=1_700_000_000.0 + lsn)


async def reopened_lsns(directory: Path) -> list[int]:
    wal = await WriteAheadLog.open(directory, SMALL_SEGMENTS)
    try:
        return [e.lsn for e in wal.read_from(1)]
    finally:
        await wal.close()


async def test_group_committed_appends_survive_power_loss(tmp_path: Path) -> None:
    """Guards the group commit's fdatasync (``SegmentWriter.sync``)."""
    with SimulatedDisk(tmp_path) as disk:
        wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.ALWAYS))
        await asyncio.gather(*(wal.append(entry(lsn)) for lsn in range(1, 41)))
        assert wal.durable_lsn == 40
        disk.cut_power()
        await wal.close()
    disk.reboot()
    assert await reopened_lsns(tmp_path) == list(range(1, 41))


async def test_appends_across_segment_rolls_survive_power_loss(tmp_path: Path) -> None:
    """Guards the roll: the sealed segment's fdatasync and the new segment's rename + directory
    fsync (``create_segment`` through ``durable_file.install``)."""
    with SimulatedDisk(tmp_path, seed=3) as disk:
        wal = await WriteAheadLog.open(tmp_path, SMALL_SEGMENTS)
        for lsn in range(1, 61):  # one at a time: every group is small, rolls fall mid-group too
            await wal.append(entry(lsn))
        await asyncio.gather(*(wal.append(entry(lsn)) for lsn in range(61, 121)))
        assert wal.stats().segments > 3
        disk.cut_power(tear=True)
        await wal.close()
    disk.reboot()
    assert await reopened_lsns(tmp_path) == list(range(1, 121))


async def test_a_new_log_survives_power_loss_before_its_first_append(tmp_path: Path) -> None:
    """Guards the header fsync of a new segment (``create_segment``): without it the segment
    has a durable name and no content."""
    directory = tmp_path / "wal"
    with SimulatedDisk(tmp_path) as disk:
        wal = await WriteAheadLog.open(directory, SMALL_SEGMENTS)
        disk.cut_power()
        await wal.close()
    disk.reboot()
    wal = await WriteAheadLog.open(directory, SMALL_SEGMENTS)
    try:
        await wal.append(entry(1))
        assert [e.lsn for e in wal.read_from(1)] == [1]
    finally:
        await wal.close()


async def test_a_restarted_log_survives_power_loss(tmp_path: Path) -> None:
    """Guards the restart segment's header fsync and rename (``restart_at``): the old segments
    are gone for good, so the restart point must be on disk."""
    with SimulatedDisk(tmp_path) as disk:
        wal = await WriteAheadLog.open(tmp_path, SMALL_SEGMENTS)
        for lsn in range(1, 6):
            await wal.append(entry(lsn))
        await wal.restart_at(100, epoch=2)
        disk.cut_power()
        await wal.close()
    disk.reboot()
    wal = await WriteAheadLog.open(tmp_path, SMALL_SEGMENTS)
    try:
        assert (wal.last_lsn, wal.last_epoch) == (99, 2)
        await wal.append(entry(100, epoch=2))
    finally:
        await wal.close()


async def test_a_truncation_survives_power_loss(tmp_path: Path) -> None:
    """Guards ``durable_file.truncate_durably`` (``truncate_after``) and the directory fsync
    after the newer segments are unlinked: an entry cut off must not come back."""
    with SimulatedDisk(tmp_path) as disk:
        wal = await WriteAheadLog.open(tmp_path, SMALL_SEGMENTS)
        for lsn in range(1, 41):
            await wal.append(entry(lsn))
        assert wal.stats().segments > 1
        await wal.truncate_after(3)
        disk.cut_power()
        await wal.close()
    disk.reboot()
    assert await reopened_lsns(tmp_path) == [1, 2, 3]

"""Where the WAL writes a group: on the event loop, or in a worker thread.

A small group is written (and fdatasync'ed) from the event loop while the disk syncs fast,
since a thread hand-off costs more than such a sync; a large group, one that rolls the
segment over, and every group while syncs are slow go to a worker thread. What a sync costs
is made up here (``SegmentWriter.sync`` reports a chosen duration) so that the decisions are
checked without depending on this machine's disk; no test measures time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from shardkv.node.wal.group_placement import IN_LOOP_GROUP_BYTES
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import SegmentHeader
from shardkv.node.wal.segment_writer import GroupResult, SegmentWriter
from shardkv.node.wal.write_ahead_log import FsyncPolicy, WalOptions, WriteAheadLog


@pytest.fixture(autouse=True)
def _no_spare_cpu_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule by sync speed and size alone: whether this machine has a core to spare
    (which also sends groups to the thread) is tested in test_wal_spare_cpu_overlap.py."""
    monkeypatch.setenv("SHARDKV_WAL_IN_LOOP", "1")


def entry(lsn: int, size: int = 64) -> WalEntry:
    mutation = Mutation(MutationKind.PUT, b"key-%d" % lsn, b"v" * size)
    return WalEntry(lsn, 1, (mutation,), ts=1_700_000_000.0 + lsn)


class Disk:
    """Records which thread wrote each group and makes each sync report ``sync_seconds``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sync_seconds = 0.0001
        self.writers: list[int] = []  # thread ident per group, in order
        self.loop_thread = threading.get_ident()
        write_group = SegmentWriter.write_group
        sync = SegmentWriter.sync

        def recording_write_group(writer: SegmentWriter,
                                  parts: Sequence[bytes | SegmentHeader],
                                  do_sync: bool) -> GroupResult:
            self.writers.append(threading.get_ident())
            return write_group(writer, parts, do_sync)

        def reported_sync(writer: SegmentWriter) -> float:
            sync(writer)
            return self.sync_seconds

        monkeypatch.setattr(SegmentWriter, "write_group", recording_write_group)
        monkeypatch.setattr(SegmentWriter, "sync", reported_sync)

    def last_in_loop(self) -> bool:
        return self.writers[-1] == self.loop_thread


async def test_a_small_group_is_written_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.ALWAYS))
    await wal.append(entry(1))
    assert disk.last_in_loop()
    assert wal.durable_lsn == 1 and wal.stats().syncs == 1
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path)
    assert [e.lsn for e in reopened.read_from(1)] == [1]
    await reopened.close()


async def test_while_syncs_are_slow_groups_go_to_a_thread_until_fast_syncs_bring_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.ALWAYS))
    disk.sync_seconds = 0.5  # a stall: this group was on the loop, it could not be foreseen
    await wal.append(entry(1))
    assert disk.last_in_loop()
    disk.sync_seconds = 0.0001
    await wal.append(entry(2))
    assert not disk.last_in_loop()
    lsn = 2
    while not disk.last_in_loop():  # each fast sync lowers the average
        lsn += 1
        assert lsn < 200, "fast syncs never brought the writes back to the loop"
        await wal.append(entry(lsn))
    assert lsn > 3  # one fast sync does not outweigh a stall
    assert wal.durable_lsn == lsn
    await wal.close()


async def test_a_group_that_rolls_the_segment_over_is_written_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    wal = await WriteAheadLog.open(tmp_path, WalOptions(segment_bytes=2048))
    lsn = 0
    while wal.stats().segments == 1:
        lsn += 1
        await wal.append(entry(lsn))
    assert not disk.last_in_loop()  # the group that created the second segment
    assert disk.writers[0] == disk.loop_thread
    await wal.close()


async def test_a_large_group_is_written_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append(entry(1, size=IN_LOOP_GROUP_BYTES + 1))
    assert not disk.last_in_loop()
    await wal.append(entry(2))
    assert disk.last_in_loop()
    assert [e.lsn for e in wal.read_from(1)] == [1, 2]
    await wal.close()


async def test_without_sync_a_small_group_is_a_plain_write_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync=FsyncPolicy.NEVER))
    await wal.append(entry(1))
    assert disk.last_in_loop()
    assert wal.stats().syncs == 0
    await wal.close()

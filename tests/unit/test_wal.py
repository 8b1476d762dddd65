"""The write-ahead log: appends, group commit, rollover, recovery, and log surgery."""

from __future__ import annotations

import asyncio
import errno
import itertools
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from eventually import eventually
from shardkv.node.wal import segment_writer
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import list_segment_files, parse_segment_name
from shardkv.node.wal.write_ahead_log import (
    FsyncPolicy,
    LsnCompacted,
    WalCorruption,
    WalFailed,
    WalLocked,
    WalOptions,
    WriteAheadLog,
)

SMALL = WalOptions(segment_bytes=2048)


def entry(lsn: int, epoch: int = 1, size: int = 64) -> WalEntry:
    value = (b"%d:" % lsn) * (size // 4 + 1)
    mutation = Mutation(MutationKind.PUT, b"key-%d" % lsn, value[:size])
    return WalEntry(lsn, epoch, (mutation,), ts=1_700_000_000.0 + lsn)


def lsns(wal: WriteAheadLog, start: int = 1) -> list[int]:
    return [e.lsn for e in wal.read_from(start)]


async def test_fresh_log_is_empty_and_takes_lsn_1(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    assert (wal.first_lsn, wal.last_lsn, wal.durable_lsn, wal.last_epoch) == (0, 0, 0, 0)
    assert list(wal.read_from(1)) == []
    await wal.append(entry(1))
    assert (wal.first_lsn, wal.last_lsn, wal.durable_lsn) == (1, 1, 1)
    assert list(wal.read_from(1)) == [entry(1)]
    await wal.close()


async def test_entries_survive_reopen_exactly(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    written = [entry(i, epoch=1 + i // 10) for i in range(1, 41)]
    await wal.append_many(written)
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path)
    assert list(reopened.read_from(reopened.first_lsn)) == written
    assert (reopened.first_lsn, reopened.last_lsn, reopened.last_epoch) == (1, 40, 5)
    assert list(reopened.read_from(38)) == written[37:]
    assert list(reopened.read_from(41)) == []
    await reopened.append(entry(41, epoch=5))
    await reopened.close()


async def test_append_checks_lsn_order_and_epoch(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append(entry(1, epoch=3))
    with pytest.raises(ValueError, match="does not follow"):
        wal.append_nowait(entry(3, epoch=3))
    with pytest.raises(ValueError, match="does not follow"):
        wal.append_nowait(entry(1, epoch=3))
    with pytest.raises(ValueError, match="epoch"):
        wal.append_nowait(entry(2, epoch=2))
    await wal.append(entry(2, epoch=4))  # nothing half-done by the refusals
    assert lsns(wal) == [1, 2]
    await wal.close()


async def test_rollover_names_segments_by_seq_and_first_lsn(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    for i in range(1, 101):
        await wal.append(entry(i))
    files = list_segment_files(tmp_path)
    assert len(files) == wal.stats().segments > 3
    seqs = [seq for seq, _, _ in files]
    assert seqs == list(range(1, len(files) + 1))
    assert files[0][1] == 1
    for (_, _, path), (_, first_next, _) in itertools.pairwise(files):
        assert path.stat().st_size <= SMALL.segment_bytes
        last_here = max(e.lsn for e in _read_one(path))
        assert first_next == last_here + 1
    assert tmp_files(tmp_path) == []
    assert lsns(wal) == list(range(1, 101))
    assert wal.stats().bytes == sum(p.stat().st_size for _, _, p in files)
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert lsns(reopened) == list(range(1, 101))
    await reopened.close()


def tmp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tmp"))


def _read_one(path: Path) -> list[WalEntry]:
    from shardkv.node.wal.segment import read_segment_entries

    seq_first = parse_segment_name(path.name)
    assert seq_first is not None
    return list(read_segment_entries(path, seq_first[1], 0))


async def test_an_entry_bigger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append(entry(1))
    await wal.append(entry(2, size=10_000))
    await wal.append(entry(3))
    assert lsns(wal) == [1, 2, 3]
    assert [first for _, first, _ in list_segment_files(tmp_path)] == [1, 2, 3]
    await wal.close()


async def test_group_commit_shares_syncs_among_concurrent_writers(tmp_path: Path) -> None:
    groups: list[int] = []
    options = WalOptions(on_sync=lambda seconds, count, nbytes: groups.append(count))
    wal = await WriteAheadLog.open(tmp_path, options)
    next_lsn = 1
    lock = asyncio.Lock()

    async def writer(rounds: int) -> None:
        nonlocal next_lsn
        for _ in range(rounds):
            async with lock:  # LSNs are assigned in order, as the Store does
                future = wal.append_nowait(entry(next_lsn))
                next_lsn += 1
            await future

    await asyncio.gather(*(writer(10) for _ in range(64)))
    stats = wal.stats()
    assert stats.appended_entries == 640 == sum(groups)
    assert stats.syncs == len(groups) < 640
    assert stats.max_group_size > 1
    assert wal.durable_lsn == 640
    assert lsns(wal) == list(range(1, 641))
    await wal.close()


async def test_interval_policy_acknowledges_after_write_and_syncs_later(tmp_path: Path) -> None:
    synced: list[int] = []
    options = WalOptions(
        fsync=FsyncPolicy.INTERVAL,
        fsync_interval_ms=20,
        on_sync=lambda seconds, count, nbytes: synced.append(count),
    )
    wal = await WriteAheadLog.open(tmp_path, options)
    await wal.append_many([entry(i) for i in range(1, 11)])
    assert lsns(wal) == list(range(1, 11))  # readable once acknowledged
    await eventually(lambda: wal.durable_lsn == 10)
    assert sum(synced) == 10
    await wal.close()


async def test_never_policy_writes_but_does_not_sync(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, WalOptions(fsync="never"))  # type: ignore[arg-type]
    assert wal.options.fsync is FsyncPolicy.NEVER
    await wal.append_many([entry(i) for i in range(1, 6)])
    assert wal.durable_lsn == 5
    assert wal.stats().syncs == 0
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path)
    assert lsns(reopened) == [1, 2, 3, 4, 5]
    await reopened.close()


async def test_read_from_sees_only_acknowledged_entries(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append(entry(1))
    pending = wal.append_nowait(entry(2))
    assert wal.last_lsn == 2
    assert lsns(wal) == [1]
    await pending
    assert lsns(wal) == [1, 2]
    await wal.close()


async def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    futures = [wal.append_nowait(entry(i)) for i in range(1, 21)]
    await wal.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(WalFailed, match="closed"):
        wal.append_nowait(entry(21))
    reopened = await WriteAheadLog.open(tmp_path)
    assert reopened.last_lsn == 20
    await reopened.close()


async def test_truncate_after_drops_the_suffix_across_segments(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append_many([entry(i, epoch=1 if i <= 30 else 2) for i in range(1, 81)])
    segments_before = wal.stats().segments
    await wal.truncate_after(30)
    assert (wal.last_lsn, wal.durable_lsn, wal.last_epoch) == (30, 30, 1)
    assert wal.stats().segments < segments_before
    assert lsns(wal) == list(range(1, 31))
    await wal.append_many([entry(i, epoch=3) for i in range(31, 41)])
    await wal.truncate_after(40)  # a no-op at the end
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert lsns(reopened) == list(range(1, 41))
    assert reopened.last_epoch == 3
    await reopened.truncate_after(0)
    assert (reopened.first_lsn, reopened.last_lsn) == (0, 0)
    await reopened.append(entry(1))
    await reopened.close()


async def test_truncate_to_a_segment_boundary_keeps_appending_right(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append_many([entry(i) for i in range(1, 61)])
    boundary = list_segment_files(tmp_path)[2][1]
    await wal.truncate_after(boundary - 1)
    assert wal.last_lsn == boundary - 1
    await wal.append_many([entry(i, epoch=2) for i in range(boundary, boundary + 30)])
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert lsns(reopened) == list(range(1, boundary + 30))
    await reopened.close()


async def test_remove_before_deletes_only_whole_old_segments(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append_many([entry(i) for i in range(1, 101)])
    firsts = [first for _, first, _ in list_segment_files(tmp_path)]
    assert await wal.remove_before(firsts[2]) == 2
    assert wal.first_lsn == firsts[2]
    assert await wal.remove_before(firsts[2]) == 0
    with pytest.raises(LsnCompacted):
        wal.read_from(firsts[2] - 1)
    assert lsns(wal, firsts[2]) == list(range(firsts[2], 101))
    assert await wal.remove_before(10_000) == len(firsts) - 3  # never the active segment
    assert wal.stats().segments == 1
    await wal.append(entry(101))
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert reopened.first_lsn == firsts[-1]
    assert lsns(reopened, reopened.first_lsn)[-1] == 101
    with pytest.raises(LsnCompacted):
        await reopened.truncate_after(firsts[-1] - 2)
    await reopened.close()


async def test_restart_at_starts_over_and_survives_reopen(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append_many([entry(i) for i in range(1, 51)])
    await wal.restart_at(1000, epoch=7)
    assert (wal.first_lsn, wal.last_lsn, wal.last_epoch) == (0, 999, 7)
    with pytest.raises(ValueError):
        wal.append_nowait(entry(51, epoch=7))
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert (reopened.first_lsn, reopened.last_lsn, reopened.last_epoch) == (0, 999, 7)
    await reopened.append(entry(1000, epoch=7))
    assert lsns(reopened, 1000) == [1000]
    with pytest.raises(LsnCompacted):
        reopened.read_from(999)
    await reopened.close()
    assert len(list_segment_files(tmp_path)) == 1


async def test_a_restart_interrupted_by_a_crash_is_finished_on_open(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.append_many([entry(i) for i in range(1, 51)])
    await wal.close()
    old = tmp_path / "old"
    old.mkdir()
    for _, _, path in list_segment_files(tmp_path):
        shutil.copy(path, old / path.name)
    wal = await WriteAheadLog.open(tmp_path, SMALL)
    await wal.restart_at(500, epoch=2)
    await wal.close()
    for path in old.iterdir():  # as if the deletions had not happened before the crash
        shutil.copy(path, tmp_path / path.name)
    reopened = await WriteAheadLog.open(tmp_path, SMALL)
    assert (reopened.first_lsn, reopened.last_lsn, reopened.last_epoch) == (0, 499, 2)
    assert len(list_segment_files(tmp_path)) == 1
    await reopened.close()


async def test_an_io_error_fails_the_group_and_poisons_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append(entry(1))

    def broken_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(segment_writer, "fdatasync", broken_sync)
    with pytest.raises(WalFailed, match="Input/output error"):
        await wal.append(entry(2))
    with pytest.raises(WalFailed):
        wal.append_nowait(entry(3))
    with pytest.raises(WalFailed):
        await wal.truncate_after(0)
    await wal.close()


async def test_maintenance_refuses_concurrent_appends(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append_many([entry(i) for i in range(1, 11)])
    truncation = asyncio.ensure_future(wal.truncate_after(5))
    await asyncio.sleep(0)  # let it start
    with pytest.raises(WalFailed, match="truncated"):
        wal.append_nowait(entry(11))
    await truncation
    await wal.append(entry(6, epoch=2))
    assert lsns(wal) == [1, 2, 3, 4, 5, 6]
    await wal.close()


async def test_stats_count_appends(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append_many([entry(i) for i in range(1, 4)])
    stats = wal.stats()
    assert stats.appended_entries == 3
    assert stats.appended_bytes > 3 * 64
    assert stats.syncs >= 1
    assert stats.sync_seconds_total >= 0
    assert stats.last_group_size >= 1
    assert stats.bytes > stats.appended_bytes  # plus the segment header
    await wal.close()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        WalOptions(fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WalOptions(segment_bytes=10)
    with pytest.raises(ValueError):
        WalOptions(fsync_interval_ms=0)


async def test_read_from_seeks_inside_a_big_segment(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    written = [entry(i, size=120) for i in range(1, 3001)]  # ~500 KiB: several checkpoints
    await wal.append_many(written)
    probes = [1, 2, 499, 500, 501, 1234, 2999, 3000, 3001]
    for start in probes:
        assert list(wal.read_from(start)) == written[start - 1 :], start
    await wal.close()
    ((_, _, segment),) = list_segment_files(tmp_path)
    data = bytearray(segment.read_bytes())
    data[200] ^= 0xFF  # damage the start of the file: a seeking reader never reads it
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption):
        await WriteAheadLog.open(tmp_path)
    data[200] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = await WriteAheadLog.open(tmp_path)
    data[200] ^= 0xFF
    segment.write_bytes(bytes(data))  # damaged after the open: only a full read notices
    assert [e.lsn for e in reopened.read_from(2990)] == list(range(2990, 3001))
    with pytest.raises(WalCorruption):
        list(reopened.read_from(1))
    await reopened.close()


async def test_checkpoints_follow_truncation(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append_many([entry(i, size=120) for i in range(1, 3001)])
    await wal.truncate_after(1500)
    replacement = [entry(i, epoch=2, size=300) for i in range(1501, 2501)]
    await wal.append_many(replacement)
    assert list(wal.read_from(2000)) == replacement[499:]
    assert [e.lsn for e in wal.read_from(1400)] == list(range(1400, 2501))
    await wal.close()


_CRASHING_WRITER = """
import asyncio, sys
from pathlib import Path
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.write_ahead_log import WalOptions, WriteAheadLog

async def main():
    wal = await WriteAheadLog.open(Path(sys.argv[1]), WalOptions(segment_bytes=16384))
    lsn = wal.last_lsn
    while True:
        futures = []
        for _ in range(16):
            lsn += 1
            put = Mutation(MutationKind.PUT, b"k", b"%d" % lsn * 20)
            futures.append(wal.append_nowait(WalEntry(lsn, 1, (put,))))
        await asyncio.gather(*futures)
        print(lsn, flush=True)

asyncio.run(main())
"""


def test_a_killed_writer_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """SIGKILL a process appending as fast as it can; everything it saw acknowledged is
    there after reopening, in order and intact."""
    acked = 0
    for round_ in range(2):  # the second round appends after recovering from the first kill
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        try:
            for line in child.stdout:
                acked = int(line)
                if acked >= 1500 * (round_ + 1):
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert acked >= 1500 * (round_ + 1)
        recovered = asyncio.run(_lsns_after_reopen(tmp_path))
        assert recovered[0] == 1
        assert recovered == list(range(1, len(recovered) + 1))
        assert len(recovered) >= acked


async def _lsns_after_reopen(directory: Path) -> list[int]:
    wal = await WriteAheadLog.open(directory, WalOptions(segment_bytes=16384))
    try:
        return [e.lsn for e in wal.read_from(1)]
    finally:
        await wal.close()


async def test_one_log_one_writer(tmp_path: Path) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    with pytest.raises(WalLocked, match="in use"):
        await WriteAheadLog.open(tmp_path)
    await wal.append(entry(1))
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path)  # released on close
    assert reopened.last_lsn == 1
    await reopened.close()


@pytest.mark.parametrize(
    "bad",
    [
        WalEntry(1, 1, (Mutation(MutationKind.PUT, "text key", b"v"),)),  # type: ignore[arg-type]
        WalEntry(1, 1, (Mutation(MutationKind.PUT, b"k", 5),)),  # type: ignore[arg-type]
        WalEntry(1, 1, (Mutation(1, b"k", b"v"),)),  # type: ignore[arg-type]
        WalEntry(1, 1, (Mutation(MutationKind.PUT, b"k", b"v", expires_at="soon"),)),  # type: ignore[arg-type]
        WalEntry(1, 1, (Mutation(MutationKind.PUT, b"k", b"v", compressed=1),)),  # type: ignore[arg-type]
        WalEntry(1, "1", ()),  # type: ignore[arg-type]
        WalEntry(1, 1, (), ts=None),  # type: ignore[arg-type]
    ],
)
async def test_an_entry_that_would_not_read_back_is_refused(tmp_path: Path, bad: WalEntry) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    with pytest.raises(ValueError):
        wal.append_nowait(bad)
    assert wal.last_lsn == 0
    await wal.append(entry(1))  # the log is untouched and usable
    await wal.close()
    reopened = await WriteAheadLog.open(tmp_path)
    assert list(reopened.read_from(1)) == [entry(1)]
    await reopened.close()


async def test_a_full_disk_mid_write_fails_the_group_and_recovery_drops_the_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = await WriteAheadLog.open(tmp_path)
    await wal.append_many([entry(i) for i in range(1, 6)])
    real_write_all = segment_writer.write_all

    def half_then_enospc(fd: int, data: bytes | memoryview) -> None:
        real_write_all(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segment_writer, "write_all", half_then_enospc)
    with pytest.raises(WalFailed, match="No space left"):
        await wal.append_many([entry(6), entry(7)])
    await wal.close()
    monkeypatch.undo()
    reopened = await WriteAheadLog.open(tmp_path)  # the half-written group is a torn tail
    written = [e.lsn for e in reopened.read_from(1)]
    assert written[:5] == [1, 2, 3, 4, 5] and len(written) <= 6  # 6 may have fit in the half
    await reopened.append(entry(len(written) + 1))
    await reopened.close()


async def test_opening_creates_missing_directories(tmp_path: Path) -> None:
    nested = tmp_path / "data" / "node-1" / "wal"
    wal = await WriteAheadLog.open(nested)
    await wal.append(entry(1))
    await wal.close()
    assert [first for _, first, _ in list_segment_files(nested)] == [1]

"""Recovery from damage: the rule of the tail (repair) versus corruption (refuse to start)."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import pytest
from shardkv.node.wal.framing import HEADER_SIZE, read_frames
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import list_segment_files
from shardkv.node.wal.write_ahead_log import WalCorruption, WalOptions, WriteAheadLog

SMALL = WalOptions(segment_bytes=2048)


def entry(lsn: int) -> WalEntry:
    return WalEntry(lsn, 1, (Mutation(MutationKind.PUT, b"k%d" % lsn, b"value-%d" % lsn),))


async def build(directory: Path, count: int, options: WalOptions = SMALL) -> list[Path]:
    wal = await WriteAheadLog.open(directory, options)
    await wal.append_many([entry(i) for i in range(1, count + 1)])
    await wal.close()
    return [path for _, _, path in list_segment_files(directory)]


def record_offsets(path: Path) -> list[int]:
    return [frame.offset for frame in read_frames(io.BytesIO(path.read_bytes()))]


def flip(path: Path, offset: int, mask: int = 0x10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


async def reopen_lsns(directory: Path) -> list[int]:
    wal = await WriteAheadLog.open(directory, SMALL)
    try:
        return [e.lsn for e in wal.read_from(1)]
    finally:
        await wal.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small one-segment log, built once and copied by the tests that damage it."""
    import asyncio

    directory = tmp_path_factory.mktemp("pristine")
    asyncio.run(build(directory, 5, WalOptions()))
    return directory


def copy_of(pristine: Path, tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "wal"
    shutil.copytree(pristine, target)
    (segment,) = [path for _, _, path in list_segment_files(target)]
    return target, segment


async def test_cutting_the_last_record_at_every_byte_is_repaired(
    pristine: Path, tmp_path: Path
) -> None:
    _, original = copy_of(pristine, tmp_path / "probe")
    size = original.stat().st_size
    (*_, last_frame) = read_frames(io.BytesIO(original.read_bytes()))
    last, payload_end = last_frame.offset, last_frame.offset + HEADER_SIZE + len(last_frame.payload)
    for cut in range(last, size):
        for trailing_zeros in (0, 512):
            directory, segment = copy_of(pristine, tmp_path / f"cut-{cut}-{trailing_zeros}")
            data = segment.read_bytes()[:cut] + bytes(trailing_zeros)
            segment.write_bytes(data)
            # Zeros that only complete the padding of a whole payload restore the record.
            survives = trailing_zeros and cut >= payload_end
            expected = [1, 2, 3, 4, 5] if survives else [1, 2, 3, 4]
            assert await reopen_lsns(directory) == expected, (cut, trailing_zeros)
            assert segment.stat().st_size == (size if survives else last)
            aside = broken_copies(directory)
            if cut == last and not trailing_zeros:
                assert aside == []  # nothing to repair: a clean end
            else:
                assert [p.read_bytes() for p in aside] == [data]


def broken_copies(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.broken-*"))


async def test_zeros_after_the_last_record_are_dropped(pristine: Path, tmp_path: Path) -> None:
    directory, segment = copy_of(pristine, tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(bytes(4096))
    assert await reopen_lsns(directory) == [1, 2, 3, 4, 5]
    assert segment.stat().st_size == size


async def test_a_repair_is_logged_with_what_was_dropped(
    pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory, segment = copy_of(pristine, tmp_path)
    last = record_offsets(segment)[-1]
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 3)
    with caplog.at_level(logging.WARNING, logger="shardkv.node.wal.write_ahead_log"):
        wal = await WriteAheadLog.open(directory)
    await wal.close()
    (record,) = [r for r in caplog.records if "torn tail" in r.getMessage()]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["path"] == str(segment)
    assert fields["offset"] == last
    assert fields["dropped_bytes"] == size - 3 - last
    assert fields["dropped_records"] == 1
    assert fields["last_lsn"] == 4


async def test_appends_after_a_repair_continue_the_crc_chain(
    pristine: Path, tmp_path: Path
) -> None:
    directory, segment = copy_of(pristine, tmp_path)
    with segment.open("r+b") as f:
        f.truncate(segment.stat().st_size - 5)
    wal = await WriteAheadLog.open(directory)
    await wal.append_many([entry(5), entry(6)])
    await wal.close()
    assert await reopen_lsns(directory) == [1, 2, 3, 4, 5, 6]


async def test_a_bit_flip_in_the_last_record_counts_as_a_torn_tail(
    pristine: Path, tmp_path: Path
) -> None:
    directory, segment = copy_of(pristine, tmp_path)
    last = record_offsets(segment)[-1]
    flip(segment, last + HEADER_SIZE + 3)
    assert await reopen_lsns(directory) == [1, 2, 3, 4]


@pytest.mark.parametrize("where", ["payload", "length", "crc"])
async def test_a_bit_flip_mid_newest_segment_is_corruption(
    pristine: Path, tmp_path: Path, where: str
) -> None:
    directory, segment = copy_of(pristine, tmp_path)
    victim = record_offsets(segment)[2]
    flip(segment, victim + {"payload": HEADER_SIZE + 1, "length": 0, "crc": 9}[where])
    before = segment.read_bytes()
    with pytest.raises(WalCorruption) as caught:
        await WriteAheadLog.open(directory)
    assert caught.value.path == segment
    assert caught.value.offset == victim
    assert str(segment) in str(caught.value) and str(victim) in str(caught.value)
    assert segment.read_bytes() == before  # never "repaired" away
    assert broken_copies(directory) == []


async def test_a_bit_flip_in_an_older_segment_is_corruption(tmp_path: Path) -> None:
    segments = await build(tmp_path, 200)
    assert len(segments) >= 3
    victim_segment = segments[1]
    offsets = record_offsets(victim_segment)
    flip(victim_segment, offsets[-1] + HEADER_SIZE)  # even its very last record
    with pytest.raises(WalCorruption) as caught:
        await WriteAheadLog.open(tmp_path, SMALL)
    assert (caught.value.path, caught.value.offset) == (victim_segment, offsets[-1])


async def test_a_torn_older_segment_is_corruption(tmp_path: Path) -> None:
    segments = await build(tmp_path, 200)
    victim = segments[0]
    with victim.open("r+b") as f:
        f.truncate(victim.stat().st_size - 4)
    with pytest.raises(WalCorruption) as caught:
        await WriteAheadLog.open(tmp_path, SMALL)
    assert caught.value.path == victim


async def test_a_missing_segment_in_the_middle_is_corruption(tmp_path: Path) -> None:
    segments = await build(tmp_path, 200)
    segments[1].unlink()
    with pytest.raises(WalCorruption, match="missing"):
        await WriteAheadLog.open(tmp_path, SMALL)


async def test_a_damaged_segment_header_is_corruption(tmp_path: Path) -> None:
    segments = await build(tmp_path, 200)
    flip(segments[-1], HEADER_SIZE + 2)
    with pytest.raises(WalCorruption) as caught:
        await WriteAheadLog.open(tmp_path, SMALL)
    assert (caught.value.path, caught.value.offset) == (segments[-1], 0)


async def test_a_segment_from_another_history_breaks_the_crc_chain(tmp_path: Path) -> None:
    ours = await build(tmp_path / "ours", 200)
    theirs_dir = tmp_path / "theirs"
    wal = await WriteAheadLog.open(theirs_dir, SMALL)
    # The same LSNs and sizes, other contents: every record is intact on its own.
    await wal.append_many(
        [
            WalEntry(i, 1, (Mutation(MutationKind.PUT, b"k%d" % i, b"VALUE-%d" % i),))
            for i in range(1, 201)
        ]
    )
    await wal.close()
    theirs = [path for _, _, path in list_segment_files(theirs_dir)]
    assert [p.name for p in theirs] == [p.name for p in ours]
    shutil.copy(theirs[0], ours[0])
    with pytest.raises(WalCorruption, match="CRC chain") as caught:
        await WriteAheadLog.open(tmp_path / "ours", SMALL)
    assert caught.value.path == ours[1]


async def test_leftover_tmp_segments_are_removed(tmp_path: Path) -> None:
    await build(tmp_path, 3)
    (tmp_path / "0000000000000009-0000000000000004.wal.tmp").write_bytes(b"half")
    assert await reopen_lsns(tmp_path) == [1, 2, 3]
    assert tmp_files(tmp_path) == []


def tmp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tmp"))


async def test_every_byte_of_the_newest_segment_follows_the_rule(
    pristine: Path, tmp_path: Path
) -> None:
    """Flip each byte in turn: damage to the last record is repaired (that record dropped),
    damage anywhere else is WalCorruption at the offset of the record holding the byte."""
    _, original = copy_of(pristine, tmp_path / "probe")
    data = original.read_bytes()
    offsets = record_offsets(original)  # [segment header, entry 1, ..., entry 5]
    directory = tmp_path / "wal"
    for position in range(len(data)):
        owner = max(o for o in offsets if o <= position)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        segment = directory / original.name
        segment.write_bytes(data[:position] + bytes([data[position] ^ 0x20]) + data[position + 1 :])
        if owner == offsets[-1]:
            assert await reopen_lsns(directory) == [1, 2, 3, 4], position
        else:
            with pytest.raises(WalCorruption) as caught:
                await WriteAheadLog.open(directory)
            assert (caught.value.path, caught.value.offset) == (segment, owner), position


def test_the_torn_tail_copy_is_whole_or_absent(tmp_path, monkeypatch) -> None:
    """Written to a temporary name and renamed; when the copy fails (a full disk) it is
    skipped, leaving neither a partial copy nor a temporary file behind."""
    import errno
    import shutil

    from shardkv.node.wal import recovery

    segment = tmp_path / "00000001.wal"
    segment.write_bytes(b"x" * 5000)
    aside = tmp_path / "00000001.wal.broken-100"
    assert recovery.copy_aside(segment, aside)
    assert aside.read_bytes() == segment.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))

    aside.unlink()
    aside.write_bytes(b"")  # what an interrupted copy left before this fix: redone
    assert recovery.copy_aside(segment, aside) and aside.stat().st_size == 5000

    aside.unlink()

    def full_disk(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        with open(dst, "wb") as f:
            f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    assert not recovery.copy_aside(segment, aside)
    assert not aside.exists() and not list(tmp_path.glob("*.tmp"))

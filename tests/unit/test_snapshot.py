"""Snapshot files: round trip, damage detection, choosing the newest valid one, retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from shardkv.node.storage.compression import encode_value
from shardkv.node.storage.snapshots.snapshot import (
    SnapshotCorrupt,
    SnapshotItem,
    check_snapshot,
    latest_valid_snapshot,
    list_snapshots,
    read_snapshot,
    remove_old_snapshots,
    snapshot_name,
    write_snapshot,
)
from shardkv.node.storage.snapshots.transfer import iter_snapshot_chunks, receive_snapshot


async def stream(items: Iterable[SnapshotItem]) -> AsyncIterator[SnapshotItem]:
    for item in items:
        yield item


def sample(count: int, seed: int = 0) -> list[SnapshotItem]:
    items: list[SnapshotItem] = []
    for i in range(count):
        value, compressed = encode_value(b"value %d/%d " % (seed, i) * (1 + i % 200))
        expires = None if i % 3 else 1_900_000_000.5 + i
        items.append((b"key:%08d" % i, value, compressed, seed * 100_000 + i + 1, expires))
    return items


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def snap(directory: Path, lsn: int, items: list[SnapshotItem], epoch: int = 1) -> Path:
    return (await write_snapshot(directory, lsn, epoch, stream(items))).path


async def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    items = sample(3000)
    assert any(item[2] for item in items) and not all(item[2] for item in items)
    meta = await write_snapshot(tmp_path, 4242, 7, stream(items))
    assert meta.path == tmp_path / "snapshot-0000000000004242.snap"
    assert (meta.lsn, meta.epoch, meta.count) == (4242, 7, 3000)
    assert list(read_snapshot(meta.path)) == items
    assert check_snapshot(meta.path) == meta
    assert list_snapshots(tmp_path) == [meta]
    assert names_in(tmp_path) == [meta.path.name]  # no temporary left


async def test_an_empty_state_is_a_valid_snapshot(tmp_path: Path) -> None:
    meta = await write_snapshot(tmp_path / "new", 0, 0, stream([]))
    assert meta.count == 0
    assert list(read_snapshot(meta.path)) == []


async def test_state_larger_than_a_chunk_streams(tmp_path: Path) -> None:
    items = [(b"k%07d" % i, b"%d" % i * 50, False, i, None) for i in range(40_000)]
    path = await snap(tmp_path, 9, items)
    assert sum(1 for _ in read_snapshot(path)) == 40_000
    assert list(read_snapshot(path))[-1] == items[-1]


def damaged_copies(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    middle = len(data) // 2

    def flipped(offset: int) -> bytes:
        return data[:offset] + bytes([data[offset] ^ 0x04]) + data[offset + 1 :]

    return {
        "truncated-half": data[:middle],
        "truncated-trailer": data[:-5],
        "no-body": data[:40],
        "empty": b"",
        "flip-body": flipped(middle),
        "flip-header-epoch": flipped(24),
        "flip-header-count": flipped(32),
        "flip-trailer-crc": flipped(len(data) - 7),
        "flip-magic": flipped(0),
        "appended": data + b"\x00" * 8,
    }


async def test_any_damage_is_detected_before_a_record_is_yielded(tmp_path: Path) -> None:
    path = await snap(tmp_path, 100, sample(2000))
    for name, data in damaged_copies(path).items():
        broken = tmp_path / name / snapshot_name(100)
        broken.parent.mkdir()
        broken.write_bytes(data)
        records = read_snapshot(broken)
        with pytest.raises(SnapshotCorrupt) as caught:
            next(records)  # nothing comes out of a damaged file, not even its first record
        assert caught.value.path == broken, name
        assert str(broken) in str(caught.value)
        with pytest.raises(SnapshotCorrupt):
            check_snapshot(broken)


async def test_a_snapshot_renamed_to_another_lsn_is_refused(tmp_path: Path) -> None:
    path = await snap(tmp_path, 100, sample(10))
    moved = path.rename(tmp_path / snapshot_name(200))
    with pytest.raises(SnapshotCorrupt, match="lsn 100"):
        check_snapshot(moved)


async def test_list_is_newest_first_and_skips_unreadable_headers(tmp_path: Path) -> None:
    for lsn in (5, 500, 50):
        await snap(tmp_path, lsn, sample(5, seed=lsn), epoch=lsn)
    (tmp_path / snapshot_name(9999)).write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not a snapshot")
    listed = list_snapshots(tmp_path)
    assert [(m.lsn, m.epoch, m.count) for m in listed] == [(500, 500, 5), (50, 50, 5), (5, 5, 5)]
    assert list_snapshots(tmp_path / "missing") == []


async def test_latest_valid_skips_a_damaged_newest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await snap(tmp_path, 10, sample(50, seed=1))
    newest = await snap(tmp_path, 20, sample(50, seed=2))
    assert latest_valid_snapshot(tmp_path).lsn == 20  # type: ignore[union-attr]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="shardkv.node.storage.snapshots.snapshot"):
        chosen = latest_valid_snapshot(tmp_path)
    assert chosen is not None and chosen.lsn == 10
    assert list(read_snapshot(chosen.path)) == sample(50, seed=1)
    assert any("damaged snapshot" in r.getMessage() for r in caplog.records)
    assert newest.exists()  # kept for a human to look at


async def test_latest_valid_is_none_without_a_good_one(tmp_path: Path) -> None:
    assert latest_valid_snapshot(tmp_path) is None
    path = await snap(tmp_path, 3, sample(5))
    path.write_bytes(path.read_bytes()[:-1])
    assert latest_valid_snapshot(tmp_path) is None


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    async def failing() -> AsyncIterator[SnapshotItem]:
        for item in sample(10):
            yield item
        raise RuntimeError("engine went away")

    with pytest.raises(RuntimeError):
        await write_snapshot(tmp_path, 77, 1, failing())
    assert names_in(tmp_path) == []


async def test_rewriting_the_same_lsn_replaces_it(tmp_path: Path) -> None:
    await snap(tmp_path, 8, sample(5, seed=1))
    path = await snap(tmp_path, 8, sample(7, seed=2))
    assert list(read_snapshot(path)) == sample(7, seed=2)


async def test_remove_old_keeps_the_newest(tmp_path: Path) -> None:
    for lsn in (1, 2, 3, 4):
        await snap(tmp_path, lsn, sample(3))
    stale_tmp = tmp_path / (snapshot_name(2) + ".tmp")
    stale_tmp.write_bytes(b"crashed mid-write")
    newer_tmp = tmp_path / (snapshot_name(9) + ".tmp")
    newer_tmp.write_bytes(b"being written right now")
    remove_old_snapshots(tmp_path, keep=2)
    assert [m.lsn for m in list_snapshots(tmp_path)] == [4, 3]
    assert not stale_tmp.exists() and newer_tmp.exists()
    remove_old_snapshots(tmp_path, keep=1)
    assert [m.lsn for m in list_snapshots(tmp_path)] == [4]
    with pytest.raises(ValueError):
        remove_old_snapshots(tmp_path, keep=0)


async def test_the_writer_does_not_block_the_loop_for_long(tmp_path: Path) -> None:
    """Other tasks keep running while a snapshot is written (the I/O goes to threads)."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    items = [(b"k%07d" % i, b"v" * 200, False, i, None) for i in range(30_000)]
    await snap(tmp_path, 1, items)
    stop.set()
    await task
    assert ticks > 1


async def chunks_of(path: Path, chunk_bytes: int) -> AsyncIterator[bytes]:
    for chunk in iter_snapshot_chunks(path, chunk_bytes):
        yield chunk


async def test_a_snapshot_travels_in_chunks(tmp_path: Path) -> None:
    items = sample(500)
    sent = await snap(tmp_path / "primary", 321, items, epoch=4)
    meta = await receive_snapshot(tmp_path / "replica", 321, chunks_of(sent, 4096))
    assert meta.path == tmp_path / "replica" / snapshot_name(321)
    assert (meta.lsn, meta.epoch, meta.count) == (321, 4, 500)
    assert meta.path.read_bytes() == sent.read_bytes()
    assert list(read_snapshot(meta.path)) == items
    assert names_in(tmp_path / "replica") == [meta.path.name]


async def test_a_damaged_or_cut_transfer_installs_nothing(tmp_path: Path) -> None:
    sent = await snap(tmp_path / "primary", 50, sample(300))
    data = sent.read_bytes()

    async def pieces(blob: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(blob), 1000):
            yield blob[start : start + 1000]

    flipped = data[:500] + bytes([data[500] ^ 1]) + data[501:]
    for broken in (data[:-100], flipped):
        with pytest.raises(SnapshotCorrupt):
            await receive_snapshot(tmp_path / "replica", 50, pieces(broken))
    with pytest.raises(SnapshotCorrupt, match="not 60"):
        await receive_snapshot(tmp_path / "replica", 60, pieces(data))

    async def interrupted() -> AsyncIterator[bytes]:
        yield data[:1000]
        raise ConnectionResetError("primary went away")

    with pytest.raises(ConnectionResetError):
        await receive_snapshot(tmp_path / "replica", 50, interrupted())
    assert names_in(tmp_path / "replica") == []


async def test_a_damaged_snapshot_is_never_sent(tmp_path: Path) -> None:
    path = await snap(tmp_path, 5, sample(20))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(SnapshotCorrupt):
        next(iter_snapshot_chunks(path))

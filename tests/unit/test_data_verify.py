"""Offline verification of a data directory: what it finds, and that it changes nothing."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

from shardkv.node.storage.data_verify import verify_data_dir
from shardkv.node.storage.snapshots.snapshot import SnapshotItem, snapshot_name, write_snapshot
from shardkv.node.wal.framing import HEADER_SIZE, read_frames
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.segment import list_segment_files
from shardkv.node.wal.write_ahead_log import WalOptions, WriteAheadLog

SMALL = WalOptions(segment_bytes=2048)


def entry(lsn: int, epoch: int = 2) -> WalEntry:
    return WalEntry(lsn, epoch, (Mutation(MutationKind.PUT, b"k%d" % lsn, b"v%d" % lsn),))


async def items(count: int) -> AsyncIterator[SnapshotItem]:
    for i in range(count):
        yield (b"k%d" % i, b"v%d" % i, False, i + 1, None)


async def make_data_dir(root: Path, entries: int = 150, snapshot_at: int | None = 80) -> Path:
    wal = await WriteAheadLog.open(root / "wal", SMALL)
    await wal.append_many([entry(i) for i in range(1, entries + 1)])
    if snapshot_at is not None:
        await write_snapshot(root / "snapshots", snapshot_at, 2, items(snapshot_at))
        await wal.remove_before(snapshot_at + 1)
    await wal.close()
    return root


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def segments(root: Path) -> list[Path]:
    return [path for _, _, path in list_segment_files(root / "wal")]


async def test_a_healthy_directory(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    report = verify_data_dir(root)
    assert report.healthy, report.render()
    assert report.problems == []
    assert report.segments == len(segments(root)) > 1
    assert report.last_lsn == 150 and report.last_epoch == 2
    assert 1 < report.first_lsn <= 81
    assert report.entries == 150 - report.first_lsn + 1
    assert [(s.lsn, s.count, s.ok) for s in report.snapshots] == [(80, 80, True)]
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["healthy"] is True and as_json["last_lsn"] == 150
    assert "healthy" in report.render()


async def test_nothing_is_modified(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    last = segments(root)[-1]
    last.write_bytes(last.read_bytes()[:-3])  # a torn tail: open() would repair it, verify not
    before = fingerprint(root)
    report = verify_data_dir(root)
    assert fingerprint(root) == before
    assert report.healthy
    (warning,) = report.problems
    assert warning.severity == "warning" and "torn tail" in warning.message
    assert warning.path == str(last)


async def test_a_bit_flip_is_an_error_naming_file_and_offset(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    victim = segments(root)[0]
    offset = [f.offset for f in read_frames(io.BytesIO(victim.read_bytes()))][3]
    data = bytearray(victim.read_bytes())
    data[offset + HEADER_SIZE] ^= 0x01
    victim.write_bytes(bytes(data))
    report = verify_data_dir(root)
    assert not report.healthy
    (error,) = [p for p in report.problems if p.severity == "error"]
    assert (error.path, error.offset) == (str(victim), offset)
    assert "NOT healthy" in report.render()


async def test_a_missing_segment_is_an_error(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path, snapshot_at=None)
    segments(root)[1].unlink()
    report = verify_data_dir(root)
    assert not report.healthy
    assert any("missing" in p.message for p in report.problems)


async def test_a_gap_between_snapshot_and_wal_is_an_error(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    (root / "snapshots" / snapshot_name(80)).unlink()
    report = verify_data_dir(root)
    assert not report.healthy
    assert any("history gap" in p.message for p in report.problems)


async def test_a_damaged_snapshot_with_a_good_older_one_is_a_warning(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    newer = (await write_snapshot(root / "snapshots", 100, 2, items(100))).path
    newer.write_bytes(newer.read_bytes()[:-10])
    report = verify_data_dir(root)
    assert report.healthy, report.render()
    assert [(s.lsn, s.ok) for s in report.snapshots] == [(100, False), (80, True)]
    assert any(p.path == str(newer) and p.severity == "warning" for p in report.problems)


async def test_a_damaged_only_snapshot_that_the_wal_needs_is_an_error(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    snap = root / "snapshots" / snapshot_name(80)
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x80
    snap.write_bytes(bytes(data))
    report = verify_data_dir(root)
    assert not report.healthy
    assert any("history gap" in p.message for p in report.problems)


async def test_an_empty_or_missing_directory(tmp_path: Path) -> None:
    report = verify_data_dir(tmp_path)
    assert report.healthy
    assert report.segments == 0 and report.snapshots == []
    assert any("no WAL directory" in p.message for p in report.problems)


async def test_leftovers_are_warnings(tmp_path: Path) -> None:
    root = await make_data_dir(tmp_path)
    (root / "wal" / "0000000000000099-0000000000000999.wal.tmp").write_bytes(b"x")
    (root / "snapshots" / (snapshot_name(50) + ".tmp")).write_bytes(b"x")
    report = verify_data_dir(root)
    assert report.healthy
    assert sorted(p.severity for p in report.problems) == ["warning", "warning"]


async def test_a_bit_flip_in_the_last_record_fails_unless_allowed(tmp_path: Path) -> None:
    """Recovery would drop that record (it cannot be told from a torn write), and on a
    standalone node it may have been acknowledged: verify says so, exit 1."""
    root = await make_data_dir(tmp_path)
    last = segments(root)[-1]
    offset = [f.offset for f in read_frames(io.BytesIO(last.read_bytes()))][-1]
    data = bytearray(last.read_bytes())
    data[offset + HEADER_SIZE] ^= 0x01
    last.write_bytes(bytes(data))
    report = verify_data_dir(root)
    assert not report.healthy
    (error,) = [p for p in report.problems if p.severity == "error"]
    assert (error.path, error.offset) == (str(last), offset)
    assert "--allow-torn-tail" in error.message
    allowed = verify_data_dir(root, allow_torn_tail=True)
    assert allowed.healthy and [p.severity for p in allowed.problems] == ["warning"]


def test_node_verify_exits_1_on_a_damaged_last_record(tmp_path: Path) -> None:
    import asyncio
    import subprocess
    import sys

    root = asyncio.run(make_data_dir(tmp_path / "d"))
    last = segments(root)[-1]
    offset = [f.offset for f in read_frames(io.BytesIO(last.read_bytes()))][-1]
    data = bytearray(last.read_bytes())
    data[offset + HEADER_SIZE] ^= 0x01
    last.write_bytes(bytes(data))
    base = [sys.executable, "-m", "shardkv.cluster.cli", "node", "verify", "--data-dir",
            str(root)]
    assert subprocess.run(base, capture_output=True, timeout=60).returncode == 1
    assert subprocess.run([*base, "--allow-torn-tail"], capture_output=True,
                          timeout=60).returncode == 0

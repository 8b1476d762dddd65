"""cluster/durable_file.py as a plain API (what survives a power loss is tests/powerloss/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shardkv.cluster import durable_file


def recording_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which kind of object each fsync/fdatasync was made on, in order."""
    seen: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def kind(fd: int) -> str:
        return "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"

    def fsync(fd: int) -> None:
        seen.append(kind(fd))
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        seen.append("data:" + kind(fd))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return seen


def test_write_atomically_replaces_syncs_file_then_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    seen = recording_syncs(monkeypatch)
    durable_file.write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no tmp left
    assert seen == ["file", "dir"]


def test_ensure_dir_syncs_each_new_directory_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recording_syncs(monkeypatch)
    durable_file.ensure_dir(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert seen == ["dir", "dir", "dir"]
    seen.clear()
    durable_file.ensure_dir(tmp_path / "a" / "b")  # exists: nothing to make durable
    assert seen == []


def test_truncate_durably_cuts_and_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    seen = recording_syncs(monkeypatch)
    durable_file.truncate_durably(path, 4)
    assert path.read_bytes() == b"0123"
    assert seen == ["file"]


def test_fdatasync_is_a_data_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recording_syncs(monkeypatch)
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x")
        f.flush()
        durable_file.fdatasync(f.fileno())
    assert seen == ["data:file"]

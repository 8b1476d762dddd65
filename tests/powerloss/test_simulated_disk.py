"""The simulated disk itself: what survives its power loss, and what does not."""

from __future__ import annotations

import os
from pathlib import Path

from simulated_disk import SimulatedDisk


def test_unsynced_writes_are_lost_and_synced_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"before")
    with SimulatedDisk(tmp_path) as disk:
        with open(tmp_path / "old", "ab") as f:
            f.write(b"+synced")
            f.flush()
            os.fsync(f.fileno())
            f.write(b"+unsynced")
        disk.cut_power()
    disk.reboot()
    assert (tmp_path / "old").read_bytes() == b"before+synced"


def test_a_new_file_needs_its_directory_synced(tmp_path: Path) -> None:
    with SimulatedDisk(tmp_path) as disk:
        for name in ("named", "unnamed"):
            with open(tmp_path / name, "wb") as f:
                f.write(b"data")
                f.flush()
                os.fsync(f.fileno())
            if name == "named":
                fd = os.open(tmp_path, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        disk.cut_power()
    disk.reboot()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named"]
    assert (tmp_path / "named").read_bytes() == b"data"


def test_a_named_but_unsynced_file_comes_back_empty(tmp_path: Path) -> None:
    with SimulatedDisk(tmp_path) as disk:
        (tmp_path / "f").write_bytes(b"never synced")
        fd = os.open(tmp_path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        disk.cut_power()
    disk.reboot()
    assert (tmp_path / "f").read_bytes() == b""


def test_an_unsynced_rename_is_undone_unless_persisted(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    for persisted, expected in ((None, ["a"]), (lambda name: name == "b", ["b"])):
        with SimulatedDisk(tmp_path) as disk:
            os.replace(tmp_path / "a", tmp_path / "b")
            disk.cut_power(persisted_renames=persisted)
        disk.reboot()
        assert sorted(p.name for p in tmp_path.iterdir()) == expected
        assert (tmp_path / expected[0]).read_bytes() == b"A"
        if expected == ["b"]:
            os.replace(tmp_path / "b", tmp_path / "a")


def test_a_torn_tail_keeps_a_prefix_of_the_unsynced_bytes(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"")
    kept = set()
    for seed in range(8):
        (tmp_path / "log").write_bytes(b"")
        with SimulatedDisk(tmp_path, seed=seed) as disk:
            with open(tmp_path / "log", "ab") as f:
                f.write(b"durable|")
                f.flush()
                os.fsync(f.fileno())
                f.write(b"0123456789")
            disk.cut_power(tear=True)
        disk.reboot()
        data = (tmp_path / "log").read_bytes()
        assert b"durable|0123456789".startswith(data) and data.startswith(b"durable|")
        kept.add(len(data))
    assert len(kept) > 1  # different tears for different seeds


def test_the_real_calls_are_back_after_the_block(tmp_path: Path) -> None:
    real = (os.fsync, os.fdatasync, os.replace, os.rename)
    with SimulatedDisk(tmp_path):
        assert os.fsync is not real[0]
    assert (os.fsync, os.fdatasync, os.replace, os.rename) == real

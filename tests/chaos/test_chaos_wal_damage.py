"""The file nemesis: deterministic, recorded, refuses running nodes, restores originals."""

from __future__ import annotations

import os
import random

import pytest
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.chaos.nemesis.wal_damage import WalDamage, flip_bit, plan_damage, wal_files


def make_wal(tmp_path, name="n1"):
    wal = tmp_path / name / "wal"
    wal.mkdir(parents=True)
    for i in range(3):
        (wal / f"{i:016d}.wal").write_bytes(bytes(range(256)) * (i + 1))
    return tmp_path / name


def test_flip_bit_changes_exactly_one_bit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\x00" * 8)
    damage = flip_bit(path, 3, 5)
    assert path.read_bytes() == b"\x00\x00\x00\x20" + b"\x00" * 4
    assert (damage.offset, damage.bit) == (3, 5)


def test_plans_replay_from_the_seed(tmp_path):
    files = wal_files(make_wal(tmp_path), ["**/*.wal"])
    assert len(files) == 3
    a = plan_damage(files, random.Random(5), mode="bitflip", flips=4)
    b = plan_damage(files, random.Random(5), mode="bitflip", flips=4)
    assert a == b
    tail = plan_damage(files, random.Random(5), mode="tail")
    assert tail[0][1] == files[-1] and files[-1].stat().st_size - 64 <= tail[0][2]


async def test_damage_then_restore(tmp_path):
    data = make_wal(tmp_path)
    before = {p: p.read_bytes() for p in wal_files(data, ["**/*.wal"])}
    nemesis = WalDamage(lambda _n: data, patterns=["**/*.wal"], seed=3)
    done = await nemesis.start(["n1"], mode="bitflip", flips=2)
    assert len(done["damage"]) == 2
    after = {p: p.read_bytes() for p in before}
    assert after != before
    await nemesis.start(["n1"], mode="truncate")
    await nemesis.heal_all()
    assert {p: p.read_bytes() for p in before} == before
    assert not list(data.glob("**/*.chaos-orig"))


async def test_refuses_a_running_node(tmp_path):
    data = make_wal(tmp_path)
    nemesis = WalDamage(lambda _n: data, pid_of=lambda _n: os.getpid(), patterns=["**/*.wal"])
    with pytest.raises(NemesisError, match="runs"):
        await nemesis.start(["n1"])


async def test_no_wal_files_is_an_error(tmp_path):
    nemesis = WalDamage(lambda _n: tmp_path, patterns=["**/*.wal"])
    with pytest.raises(NemesisError, match="no WAL files"):
        await nemesis.start(["n1"])
    assert list(tmp_path.iterdir()) == []

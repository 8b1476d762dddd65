"""The durable Raft journal: reopen, torn tails repaired, corruption refused, truncations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shardkv.coordinator.durable_journal import MAGIC, DurableJournal, JournalCorrupted


def filled(path: Path, n: int) -> DurableJournal:
    j = DurableJournal(str(path))
    for i in range(1, n + 1):
        j.add(f"cmd-{i}".encode(), i, 1 + i // 3)
    return j


def test_entries_survive_reopen(tmp_path: Path) -> None:
    j = filled(tmp_path / "j", 5)
    j.setCurrentTerm(7, "127.0.0.1:1")
    j.setRaftCommitIndex(4)
    j._destroy()
    again = DurableJournal(str(tmp_path / "j"))
    assert len(again) == 5
    assert again[0] == (b"cmd-1", 1, 1) and again[-1] == (b"cmd-5", 5, 2)
    assert again.getCurrentTerm() == 7 and again.getVotedForNodeId() == "127.0.0.1:1"
    assert again.getRaftCommitIndex() == 4


@pytest.mark.parametrize("tail", [b"\x05", b"\x10\x00\x00\x00\x00\x00", b"\x09\x00\x00\x00"
                                  b"\xff\xff\xff\xff" + b"x" * 9])
def test_a_torn_tail_is_copied_aside_and_truncated(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "j"
    filled(path, 3)._destroy()
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(tail)
    j = DurableJournal(str(path))
    assert len(j) == 3 and j.repaired_tail_bytes == len(tail)
    assert path.stat().st_size == size
    assert [p.name for p in tmp_path.iterdir() if ".torn-" in p.name] == [f"j.torn-{size}"]
    j.add(b"cmd-4", 4, 2)
    j._destroy()
    assert DurableJournal(str(path))[-1] == (b"cmd-4", 4, 2)


def test_damage_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "j"
    filled(path, 4)._destroy()
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 12] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupted, match="offset"):
        DurableJournal(str(path))


def test_commit_index_is_clamped_to_the_entries_held(tmp_path: Path) -> None:
    j = filled(tmp_path / "j", 3)
    j.setRaftCommitIndex(9)
    assert j.getRaftCommitIndex() == 3


def test_delete_from_and_to(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = filled(path, 6)
    j.deleteEntriesFrom(4)
    assert [e[1] for e in j] == [1, 2, 3, 4]
    j.add(b"new-5", 5, 9)
    j.deleteEntriesTo(2)
    assert [e[1] for e in j] == [3, 4, 5]
    j._destroy()
    again = DurableJournal(str(path))
    assert [e[1] for e in again] == [3, 4, 5] and again[-1][0] == b"new-5"
    again.clear()
    assert len(again) == 0
    again._destroy()
    assert len(DurableJournal(str(path))) == 0


def test_corrupt_meta_refuses_to_guess_a_term(tmp_path: Path) -> None:
    j = filled(tmp_path / "j", 1)
    j.setCurrentTerm(3, None)
    j._destroy()
    meta = tmp_path / "j.meta"
    meta.write_bytes(meta.read_bytes()[:-1] + b"\x00")
    with pytest.raises(JournalCorrupted):
        DurableJournal(str(tmp_path / "j"))


def test_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"PYSYNCOBJ" + os.urandom(64))
    with pytest.raises(JournalCorrupted, match="header"):
        DurableJournal(str(path))


def test_a_re_sent_suffix_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = filled(path, 6)
    size = path.stat().st_size
    j.deleteEntriesFrom(3)  # pysyncobj: the leader re-sent entries from index 4 ...
    assert [e[1] for e in j] == [1, 2, 3]
    for command, idx, term in [(b"cmd-4", 4, 2), (b"cmd-5", 5, 2)]:
        j.add(command, idx, term)  # ... and they come back unchanged: no write at all
    assert path.stat().st_size == size
    j.add(b"other-6", 6, 5)  # a different entry: the stale tail is cut, then it is written
    assert [e[0] for e in j][-2:] == [b"cmd-5", b"other-6"]
    j._destroy()
    assert [e[0] for e in DurableJournal(str(path))] == [b"cmd-1", b"cmd-2", b"cmd-3",
                                                        b"cmd-4", b"cmd-5", b"other-6"]


def test_deleted_entries_are_cut_from_the_file_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = filled(path, 4)
    j.deleteEntriesFrom(2)
    j.onOneSecondTimer()  # pysyncobj's periodic call
    assert [e[1] for e in DurableJournal(str(path))] == [1, 2]
    j.deleteEntriesFrom(1)
    j._destroy()
    assert [e[1] for e in DurableJournal(str(path))] == [1]

"""Power loss under the small metadata files: the coordinator's Raft journal, its term/vote
file and map snapshots, the node's id file, and the launcher's cluster.json. Each test names
the fsync it guards."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shardkv.cluster.durable_file import ensure_dir
from shardkv.cluster.launcher import write_json_atomically
from shardkv.coordinator.durable_journal import DurableJournal
from shardkv.coordinator.raft_bridge import snapshot_reader, snapshot_writer
from shardkv.coordinator.state_machine import MapStateMachine
from shardkv.node.membership import coordinator_link
from simulated_disk import SimulatedDisk


def journal_entries(path: Path) -> list[tuple[bytes, int, int]]:
    journal = DurableJournal(str(path))
    try:
        return list(journal.entries)
    finally:
        journal._destroy()


def test_raft_journal_appends_survive_power_loss(tmp_path: Path) -> None:
    """Guards ``DurableJournal.add``'s fdatasync, and the journal file's creation
    (``durable_file.write_atomically``: fsync, rename, directory fsync)."""
    path = tmp_path / "raft.journal"
    with SimulatedDisk(tmp_path, seed=5) as disk:
        journal = DurableJournal(str(path))
        for i in range(1, 21):
            journal.add(b"cmd-%d" % i, i, 1)
        disk.cut_power(tear=True)
        journal._file.close()
    disk.reboot()
    assert journal_entries(path) == [(b"cmd-%d" % i, i, 1) for i in range(1, 21)]


def test_raft_term_and_vote_survive_power_loss(tmp_path: Path) -> None:
    """Guards the term/vote file (``_store_meta`` through ``write_atomically``): Raft must
    never vote twice in a term, so a vote is durable before it is sent."""
    path = tmp_path / "raft.journal"
    DurableJournal(str(path))._destroy()
    with SimulatedDisk(tmp_path) as disk:
        journal = DurableJournal(str(path))
        journal.setCurrentTerm(9, "127.0.0.1:4001")
        disk.cut_power()
        journal._file.close()
    disk.reboot()
    again = DurableJournal(str(path))
    try:
        assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (9, "127.0.0.1:4001")
    finally:
        again._destroy()


def machine_with_nodes() -> MapStateMachine:
    machine = MapStateMachine()
    for command in ({"op": "bootstrap", "shards": 2, "replication_factor": 1},
                    {"op": "register_node", "url": "http://127.0.0.1:7001"},
                    {"op": "register_node", "url": "http://127.0.0.1:7002"}):
        assert "error" not in machine.apply(command)
    return machine


def test_a_map_snapshot_and_compacted_journal_survive_power_loss(tmp_path: Path) -> None:
    """pysyncobj's log compaction, as it runs on Linux: the serializer writes the snapshot
    under a temporary name (``snapshot_writer``: fsync), pysyncobj renames it
    (``atomicReplace`` is ``os.rename``, no directory fsync), then deletes the journal's
    entries up to it (``DurableJournal._compact``: a directory fsync first, then the journal
    rewritten by ``write_atomically``). Guards the snapshot's fsync and the directory fsync in
    ``_compact``: the power goes out after the new journal's rename, before the directory
    fsync that would make it durable, and the filesystem had committed that rename but not the
    snapshot's (a journaling filesystem may); without the first directory fsync the compacted
    journal then points past a snapshot that is not there."""
    journal_path, dump = tmp_path / "raft.journal", tmp_path / "raft.snapshot"
    machine = machine_with_nodes()
    with SimulatedDisk(tmp_path) as disk:
        journal = DurableJournal(str(journal_path))
        for i in range(1, 11):
            journal.add(b"cmd-%d" % i, i, 1)
        snapshot_writer(machine)(str(dump) + ".tmp",
                                 ((b"cmd-8", 8, 1), (b"cmd-7", 7, 1), set()))
        os.rename(str(dump) + ".tmp", dump)

        seen = len(disk.log.renames)  # the journal's creation is one already

        def after_journal_rename(path: str, is_dir: bool) -> bool:
            return is_dir and any(dst.endswith("raft.journal")
                                  for _, dst in disk.log.renames[seen:])

        disk.cut_power_before_sync(after_journal_rename,
                                   persisted_renames=lambda name: name == "raft.journal")
        journal.deleteEntriesTo(8)
        journal._file.close()
    disk.reboot()
    assert [index for _, index, _ in journal_entries(journal_path)] == [9, 10]
    restored = MapStateMachine()
    last, _, _ = snapshot_reader(restored, lambda _: None)(str(dump))
    assert last == (b"cmd-8", 8, 1)
    assert restored.snapshot() == machine.snapshot()


def test_a_map_snapshot_installed_by_the_leader_survives_power_loss(tmp_path: Path) -> None:
    """A follower that fell behind receives the leader's snapshot into a file pysyncobj never
    syncs, reads it (``snapshot_reader``), then clears its journal. Guards the reader's fsync
    of the file and of its directory."""
    journal_path, dump = tmp_path / "raft.journal", tmp_path / "raft.snapshot"
    leader = machine_with_nodes()
    snapshot_writer(leader)(str(tmp_path / "sent"), ((b"c", 30, 2), (b"b", 29, 2), set()))
    received = (tmp_path / "sent").read_bytes()
    (tmp_path / "sent").unlink()
    with SimulatedDisk(tmp_path) as disk:
        journal = DurableJournal(str(journal_path))
        for i in range(1, 4):
            journal.add(b"old-%d" % i, i, 1)
        with open(str(dump) + ".1.tmp", "wb") as f:  # as pysyncobj receives it: no fsync
            f.write(received)
        os.rename(str(dump) + ".1.tmp", dump)
        follower = MapStateMachine()
        snapshot_reader(follower, lambda _: None)(str(dump))
        journal.clear()
        disk.cut_power()
        journal._file.close()
    disk.reboot()
    restored = MapStateMachine()
    last, _, _ = snapshot_reader(restored, lambda _: None)(str(dump))
    assert last == (b"c", 30, 2)
    assert restored.snapshot() == leader.snapshot()


def test_the_node_id_file_survives_power_loss(tmp_path: Path) -> None:
    """Guards the node id (and registration token) file: a node that forgot its id after a
    power loss would register as a new node while the map still lists the old one."""
    data_dir = tmp_path / "data"
    path = str(data_dir / coordinator_link.NODE_ID_FILE)
    with SimulatedDisk(tmp_path) as disk:
        ensure_dir(data_dir)  # as the node creates its data dir before registering
        coordinator_link._write_durably(path, "n7")
        disk.cut_power()
    disk.reboot()
    assert coordinator_link._read_text(path) == "n7"


def test_cluster_json_survives_power_loss(tmp_path: Path) -> None:
    """Guards ``write_json_atomically`` (the launcher's record of a local cluster): the file is
    the only way ``shardkv down`` finds the processes to stop."""
    plan: dict[str, Any] = {"nodes": [{"id": "n1", "port": 7001}]}
    with SimulatedDisk(tmp_path) as disk:
        write_json_atomically(tmp_path / "cluster.json", plan)
        disk.cut_power()
    disk.reboot()
    assert json.loads((tmp_path / "cluster.json").read_text()) == plan

"""Prove that each power-loss test guards its fsync: remove one sync from the source, run the
tests that name it, expect them to fail, put the source back.

    .venv/bin/python tests/powerloss/fsync_mutations.py [--only SUBSTRING]

Run by hand (it edits files in the working tree for a few seconds each, restoring them even
on Ctrl-C); not collected by pytest. Prints one line per mutation: CAUGHT when every listed
test failed, MISSED otherwise. Rows marked ``expect="pass"`` are syncs whose loss a power loss
cannot turn into wrong data (the note beside each says why); for them MISSED is the expected
result and is printed as "not needed".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests/powerloss/"
WAL = HERE + "test_powerloss_wal.py::"
SNAP = HERE + "test_powerloss_snapshots.py::"
META = HERE + "test_powerloss_metadata.py::"


@dataclass(frozen=True)
class Mutation:
    site: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    expect: str = "fail"
    note: str = ""


MUTATIONS = (
    Mutation("WAL group commit fdatasync", "node/wal/segment_writer.py",
             "        fdatasync(self.fd)\n        return", "        return",
             (WAL + "test_group_committed_appends_survive_power_loss",)),
    Mutation("WAL seal of a full segment", "node/wal/segment_writer.py",
             "            fdatasync(self.fd)  # a sealed", "            pass  # a sealed",
             (WAL + "test_appends_across_segment_rolls_survive_power_loss",)),
    Mutation("WAL new segment header fsync", "node/wal/segment.py",
             "        fsync_fd(fd)\n", "        pass\n",
             (WAL + "test_a_new_log_survives_power_loss_before_its_first_append",
              WAL + "test_a_restarted_log_survives_power_loss")),
    Mutation("WAL new segment rename + dir fsync", "node/wal/segment.py",
             "    install(tmp, path)\n", "    os.replace(tmp, path)\n",
             (WAL + "test_appends_across_segment_rolls_survive_power_loss",)),
    Mutation("WAL truncation: dir fsync after unlinking newer segments",
             "node/wal/segment_maintenance.py",
             "        seg.path.unlink()\n    fsync_dir(directory)\n",
             "        seg.path.unlink()\n", (WAL + "test_a_truncation_survives_power_loss",)),
    Mutation("durable truncate fsync (WAL truncation, torn-tail repair)",
             "cluster/durable_file.py",
             "    fd = os.open(path, os.O_WRONLY)\n    try:\n        os.fsync(fd)\n",
             "    fd = os.open(path, os.O_WRONLY)\n    try:\n        pass\n",
             (WAL + "test_a_truncation_survives_power_loss",)),
    Mutation("WAL restart and compaction: dir fsync after unlinking old segments",
             "node/wal/segment_maintenance.py",
             "        seg.path.unlink(missing_ok=True)\n    fsync_dir(directory)\n",
             "        seg.path.unlink(missing_ok=True)\n",
             (WAL + "test_a_restarted_log_survives_power_loss",
              SNAP + "test_a_snapshot_behind_a_compacted_log_survives_power_loss"),
             expect="pass",
             note="the restart segment is flagged, so recovery finishes the deletions; "
                  "segments that come back after compaction are an older, valid prefix"),
    Mutation("snapshot file fsync", "node/storage/snapshots/snapshot.py",
             "    sync_file(f)\n    f.close()\n    install(",
             "    f.flush()\n    f.close()\n    install(",
             (SNAP + "test_a_snapshot_behind_a_compacted_log_survives_power_loss",)),
    Mutation("snapshot rename + dir fsync", "node/storage/snapshots/snapshot.py",
             "    install(f.name, path)\n", "    os.replace(f.name, path)\n",
             (SNAP + "test_a_snapshot_behind_a_compacted_log_survives_power_loss",)),
    Mutation("snapshot dir created durably (ensure_dir parent fsync)", "cluster/durable_file.py",
             "        path.mkdir(exist_ok=True)\n        fsync_dir(path.parent)\n",
             "        path.mkdir(exist_ok=True)\n",
             (SNAP + "test_a_snapshot_behind_a_compacted_log_survives_power_loss",
              META + "test_the_node_id_file_survives_power_loss")),
    Mutation("SQLite engine creates the data dir durably", "node/storage/engines/sqlite.py",
             "await asyncio.to_thread(ensure_dir, directory)",
             "await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)",
             (SNAP + "test_a_snapshot_behind_a_compacted_log_survives_power_loss[sqlite]",)),
    Mutation("received snapshot fsync", "node/storage/snapshots/transfer.py",
             "    sync_file(f)\n", "    f.flush()\n",
             (SNAP + "test_a_received_snapshot_survives_power_loss",)),
    Mutation("received snapshot rename + dir fsync", "node/storage/snapshots/transfer.py",
             "    install(tmp, final)\n", "    tmp.replace(final)\n",
             (SNAP + "test_a_received_snapshot_survives_power_loss",)),
    Mutation("installed snapshot: move out of staging + dir fsync",
             "node/replication/replica_log.py",
             "    install(staged, final)\n", "    staged.replace(final)\n",
             (SNAP + "test_a_snapshot_installed_on_a_replica_survives_power_loss",)),
    Mutation("Raft journal append fdatasync", "coordinator/durable_journal.py",
             "            fdatasync(f.fileno())\n", "            pass\n",
             (META + "test_raft_journal_appends_survive_power_loss",)),
    Mutation("Raft compaction: dir fsync before rewriting the journal",
             "coordinator/durable_journal.py",
             "        fsync_dir(os.path.dirname(self.path))  # make the dump",
             "        pass  # make the dump",
             (META + "test_a_map_snapshot_and_compacted_journal_survive_power_loss",)),
    Mutation("Raft map snapshot fsync (serializer)", "coordinator/raft_bridge.py",
             "            sync_file(f)\n", "            f.flush()\n",
             (META + "test_a_map_snapshot_and_compacted_journal_survive_power_loss",)),
    Mutation("Raft installed snapshot: file fsync", "coordinator/raft_bridge.py",
             "            fsync_fd(f.fileno())\n", "            pass\n",
             (META + "test_a_map_snapshot_installed_by_the_leader_survives_power_loss",)),
    Mutation("Raft installed snapshot: dir fsync", "coordinator/raft_bridge.py",
             "        fsync_dir(os.path.dirname(path))\n", "",
             (META + "test_a_map_snapshot_installed_by_the_leader_survives_power_loss",)),
    Mutation("atomic replace: file fsync (journal creation, term/vote, node id, cluster.json)",
             "cluster/durable_file.py",
             "        f.write(data)\n        sync_file(f)\n", "        f.write(data)\n",
             (META + "test_raft_term_and_vote_survive_power_loss",
              META + "test_the_node_id_file_survives_power_loss",
              META + "test_cluster_json_survives_power_loss")),
    Mutation("install: dir fsync after rename (all atomic replaces and installs)",
             "cluster/durable_file.py",
             "    os.replace(tmp, final)\n    fsync_dir(Path(final).parent)\n",
             "    os.replace(tmp, final)\n",
             (META + "test_raft_journal_appends_survive_power_loss",
              META + "test_raft_term_and_vote_survive_power_loss",
              META + "test_the_node_id_file_survives_power_loss",
              META + "test_cluster_json_survives_power_loss",
              SNAP + "test_a_received_snapshot_survives_power_loss")),
)


def fails(test: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
        cwd=ROOT, capture_output=True, text=True,
    )
    return result.returncode != 0


def run(mutation: Mutation) -> str:
    path = ROOT / mutation.path
    original = path.read_text()
    if original.count(mutation.old) != 1:
        return f"ERROR  {mutation.site}: the text to remove is not unique in {mutation.path}"
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        failed = [t for t in mutation.tests if fails(t)]
    finally:
        path.write_text(original)
    missed = [t.split("::")[-1] for t in mutation.tests if t not in failed]
    if mutation.expect == "pass":
        verdict = "not needed" if len(failed) == 0 else "CAUGHT (unexpected)"
        return f"{verdict:<11} {mutation.site} ({mutation.note})"
    if missed:
        return f"MISSED      {mutation.site}: still passing: {', '.join(missed)}"
    names = ", ".join(t.split("::")[-1] for t in mutation.tests)
    return f"CAUGHT      {mutation.site}: {names}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutations whose site contains this")
    args = parser.parse_args()
    bad = 0
    for mutation in MUTATIONS:
        if args.only.lower() not in mutation.site.lower():
            continue
        line = run(mutation)
        print(line, flush=True)
        bad += line.startswith(("MISSED", "ERROR", "CAUGHT (unexpected)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

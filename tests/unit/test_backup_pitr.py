"""Point-in-time planning and replay without a cluster: the window from backups, archived
chunks and the progress marker; replay stops at the first entry stamped after the time."""

from __future__ import annotations

import json

import pytest
from shardkv.backup.pitr import plan_restore
from shardkv.backup.repository.destination import LocalDestination
from shardkv.backup.repository.errors import BackupError
from shardkv.backup.repository.manifest import Manifest, ShardBackup, manifest_name
from shardkv.backup.repository.record_stream import RecordWriter, read_records
from shardkv.backup.repository.wal_archive import (
    DELETE,
    PUT,
    ArchivedChunk,
    Progress,
    chunk_name,
    index_name,
    write_progress,
)
from shardkv.backup.restore import _entry_batches


def _archive(dest: LocalDestination, entries: list[list[object]]) -> None:
    first, last = entries[0][0], entries[-1][0]
    writer = RecordWriter(dest, chunk_name("s1", first, last, False), None)
    for entry in entries:
        writer.write(entry)
    stored = writer.close()
    chunk = ArchivedChunk("s1", first, last, entries[0][2], entries[-1][2], None, stored)
    dest.put_bytes(index_name("s1", first, last), json.dumps(chunk.to_dict()).encode())


def _backup(dest: LocalDestination, backup_id: str, lsn: int, taken_at: float) -> None:
    writer = RecordWriter(dest, f"backups/{backup_id}/shards/s1.kv.zst", None)
    writer.write([b"a", b"1", None, lsn])
    shard = ShardBackup("s1", lsn, 1, "n2", "replica", taken_at, 1, writer.close())
    manifest = Manifest(backup_id, taken_at - 1, taken_at + 1, 3, {}, {}, {"s1": shard})
    dest.put_bytes(manifest_name(backup_id), manifest.to_json())


def _entry(lsn: int, ts: float, *mutations: list[object]) -> list[object]:
    return [lsn, 1, ts, list(mutations)]


@pytest.fixture
def dest(tmp_path):
    dest = LocalDestination(tmp_path, create=True)
    _backup(dest, "b1", 10, 100.0)
    _backup(dest, "b2", 15, 105.5)
    _archive(dest, [_entry(i, 90.0 + i) for i in range(8, 21)])  # overlaps b1's LSN
    return dest


def test_window_and_base_choice(dest):
    assert plan_restore(dest, None, 104.0).manifest.backup_id == "b1"
    assert plan_restore(dest, None, 107.0).manifest.backup_id == "b2"
    plan = plan_restore(dest, None, 108.0)
    assert plan.window == (105.5, 110.0)  # the newest archived entry is at 110
    with pytest.raises(BackupError, match="after the restorable window"):
        plan_restore(dest, None, 120.0)
    write_progress(dest, "s1", Progress(20, 130.0))  # nothing new since 110 up to 130
    assert plan_restore(dest, None, 120.0).window == (105.5, 130.0)
    write_progress(dest, "s1", Progress(25, 140.0))  # beyond what the chunks hold: ignored
    assert plan_restore(dest, None, 110.0).window[1] == 110.0
    with pytest.raises(BackupError, match="before the restorable window"):
        plan_restore(dest, None, 50.0)
    with pytest.raises(BackupError, match="before backup b2"):
        plan_restore(dest, "b2", 101.0)


def test_replay_is_a_prefix_up_to_the_time(dest):
    plan = plan_restore(dest, "b1", 104.0)
    (replay,) = plan.replays.values()
    records = [r for c in replay.chunks for r in read_records(dest, c.file, None)]
    counter = [0]
    batches = list(_entry_batches(records, replay.from_lsn, 104.0, counter))
    assert counter[0] == 4 and batches == []  # LSNs 11..14 (no mutations), stop at 15
    writes = [_entry(11, 1.0, [PUT, b"k", b"v1", None]),
              _entry(12, 2.0, [PUT, b"k", b"v2", 9.0]),
              _entry(13, 3.0, [DELETE, b"gone", b"", None]),
              _entry(14, 5.0, [PUT, b"x", b"", None]),  # stamped after 4.5: replay stops
              _entry(15, 4.0, [PUT, b"y", b"", None])]  # so this earlier stamp is not taken
    counter = [0]
    (batch,) = _entry_batches(writes, 10, 4.5, counter)
    assert batch == {b"k": (b"v2", 9.0), b"gone": None} and counter[0] == 3
    with pytest.raises(BackupError, match="jumps from LSN 10 to 12"):
        list(_entry_batches(writes[1:], 10, 9.0, [0]))


def test_retention_deletes_backups_and_the_wal_only_they_needed(dest):
    from shardkv.backup.inspection import delete
    from shardkv.backup.repository.catalog import backup_ids
    from shardkv.backup.repository.wal_archive import list_chunks

    _archive(dest, [_entry(1, 80.0), _entry(2, 81.0)])  # before every backup's LSN
    assert [c.first_lsn for c in list_chunks(dest, "s1")] == [1, 8]
    result = delete(dest, backup_id=None, keep=1, keep_days=None, now=200.0)
    assert result["deleted"] == ["b1"] and backup_ids(dest) == (["b2"], [])
    # b2 is at LSN 15: the chunk 1..2 is no use to it any more; 8..20 still is.
    assert result["wal_chunks_pruned"] == 1
    assert [c.first_lsn for c in list_chunks(dest, "s1")] == [8]


def test_node_flag_and_environment_turn_archiving_on(tmp_path):
    from shardkv.node.config import load_config

    flags = {"data_dir": str(tmp_path), "archive_to": "s3://b/p"}
    config = load_config(flags, {"SHARDKV_ARCHIVE_INTERVAL_S": "0.5"})
    assert (config.archive_to, config.archive_interval_s) == ("s3://b/p", 0.5)
    assert load_config({"data_dir": str(tmp_path)}, {}).archive_to is None
    config = load_config({"data_dir": str(tmp_path)}, {"SHARDKV_ARCHIVE_TO": "/arch"})
    assert config.archive_to == "/arch"


def test_verify_names_an_archive_gap_and_a_damaged_chunk(dest, tmp_path):
    from shardkv.backup.inspection import verify

    assert verify(dest).ok
    _archive(dest, [_entry(i, 200.0 + i) for i in range(25, 31)])
    report = verify(dest)
    assert report.problems == [
        "archived WAL of shard s1 misses LSNs 21..24 between "
        "wal/s1/0000000000000008-0000000000000020.json and "
        "wal/s1/0000000000000025-0000000000000030.json (point-in-time restore cannot cross it)"]
    victim = tmp_path / chunk_name("s1", 25, 30, False)
    victim.write_bytes(victim.read_bytes()[:-3])
    assert any("0000000000000025-0000000000000030.wal.zst" in p and "truncated" in p
               for p in verify(dest).problems)


def test_cli_list_verify_deep_and_delete(dest, tmp_path, capsys):
    from shardkv.cluster.cli import main

    assert main(["backup", "list", "--from", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in listing["backups"]] == ["b1", "b2"]
    assert main(["backup", "verify", "--from", str(tmp_path), "--deep"]) == 0
    assert "ok: " in capsys.readouterr().out
    assert main(["backup", "delete", "--from", str(tmp_path)]) == 1  # nothing said: refused
    assert "say what to delete" in capsys.readouterr().err
    assert main(["backup", "delete", "--from", str(tmp_path), "--backup", "b2"]) == 0
    assert "deleted 1 backups (b2)" in capsys.readouterr().out
    assert main(["backup", "restore", "--from", str(tmp_path), "--backup", "b2",
                 "--coordinator", "http://127.0.0.1:9"]) == 1
    assert "no complete backup 'b2'" in capsys.readouterr().err

"""The backup repository without a cluster: streamed files, encryption, the manifest's own
checksum, retention and the WAL archive's continuity, on a local directory."""

from __future__ import annotations

import os
import secrets

import pytest
from shardkv.backup.repository.catalog import backup_ids, delete_backup, load_manifest
from shardkv.backup.repository.destination import LocalDestination, open_destination
from shardkv.backup.repository.encryption import (
    Decryptor,
    Encryptor,
    check_key,
    key_id,
    parse_key,
)
from shardkv.backup.repository.errors import (
    BackupError,
    DamagedFile,
    DestinationUnreachable,
    MissingFile,
    WrongKey,
)
from shardkv.backup.repository.manifest import Manifest, ShardBackup, manifest_name
from shardkv.backup.repository.record_stream import RecordWriter, check_stored, read_records
from shardkv.backup.repository.retention import doomed_backups
from shardkv.backup.repository.wal_archive import ArchivedChunk, covering, gaps


def _rows(n: int) -> list[list[object]]:
    return [[f"key:{i:06d}".encode(), os.urandom(8) + b"v" * (i % 50),
             None if i % 3 else 1e10 + i, i + 1] for i in range(n)]


@pytest.mark.parametrize("encrypted", [False, True])
def test_records_round_trip_streamed(tmp_path, encrypted):
    dest = LocalDestination(tmp_path, create=True)
    key = secrets.token_bytes(32) if encrypted else None
    rows = _rows(5000)
    writer = RecordWriter(dest, "backups/b1/shards/s1.kv.zst", key)
    for row in rows:
        writer.write(row)
    stored = writer.close()
    assert stored.records == len(rows) and stored.size == (tmp_path / stored.name).stat().st_size
    check_stored(dest, stored)
    assert list(read_records(dest, stored, key)) == rows
    if encrypted:  # the stored bytes do not contain the plaintext keys
        assert b"key:000001" not in (tmp_path / stored.name).read_bytes()


def test_a_flipped_byte_is_named(tmp_path):
    dest = LocalDestination(tmp_path, create=True)
    writer = RecordWriter(dest, "f.kv.zst", None)
    for row in _rows(100):
        writer.write(row)
    stored = writer.close()
    path = tmp_path / stored.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match=r"f\.kv\.zst.*SHA-256"):
        check_stored(dest, stored)
    path.unlink()
    with pytest.raises(MissingFile, match=r"f\.kv\.zst"):
        check_stored(dest, stored)


def test_wrong_key_and_tampering_are_refused():
    key = secrets.token_bytes(32)
    enc = Encryptor(key, chunk_bytes=64)
    sealed = enc.feed(b"x" * 1000) + enc.finish()
    dec = Decryptor(key, "f")
    assert dec.feed(sealed) == b"x" * 1000
    dec.finish()
    with pytest.raises(WrongKey, match="cannot decrypt f"):
        Decryptor(secrets.token_bytes(32), "f").feed(sealed)
    cut = Decryptor(key, "f")
    cut.feed(sealed[:-30])  # the last chunk is missing: truncation is caught
    with pytest.raises(DamagedFile, match="truncated"):
        cut.finish()
    with pytest.raises(WrongKey, match="wrong encryption key"):
        check_key(key_id(key), secrets.token_bytes(32), "backup b")
    with pytest.raises(WrongKey, match="is encrypted"):
        check_key(key_id(key), None, "backup b")
    assert parse_key(key.hex(), "env") == key
    with pytest.raises(BackupError, match="not 32 bytes"):
        parse_key("abcd", "env")


def _manifest(backup_id: str, created_at: float, file) -> Manifest:
    shard = ShardBackup("s1", 42, 3, "n2", "replica", created_at, file.records, file)
    return Manifest(backup_id, created_at, created_at + 1, 7, {"version": 1}, {"version": 7},
                    {"s1": shard})


def test_manifest_checks_itself_and_catalog(tmp_path):
    dest = LocalDestination(tmp_path, create=True)
    writer = RecordWriter(dest, "backups/b1/shards/s1.kv.zst", None)
    writer.write([b"k", b"v", None, 1])
    manifest = _manifest("b1", 1000.0, writer.close())
    dest.put_bytes(manifest_name("b1"), manifest.to_json())
    assert load_manifest(dest, "b1") == manifest
    edited = (tmp_path / manifest_name("b1")).read_text().replace('"lsn": 42', '"lsn": 43')
    (tmp_path / manifest_name("b1")).write_text(edited)
    with pytest.raises(DamagedFile, match=r"manifest\.json.*own SHA-256"):
        load_manifest(dest, "b1")
    dest.upload("backups/b2/shards/s1.kv.zst").commit()  # no manifest: interrupted
    assert backup_ids(dest) == (["b1"], ["b2"])
    assert delete_backup(dest, "b2") == 1 and backup_ids(dest) == (["b1"], [])


def test_unreachable_destinations(tmp_path):
    with pytest.raises(DestinationUnreachable, match="not a directory"):
        open_destination(str(tmp_path / "nothing-here"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DestinationUnreachable):
        open_destination(str(tmp_path / "file" / "sub"), create=True)
    with pytest.raises(BackupError, match="unsupported"):
        open_destination("ftp://example/x")
    dest = LocalDestination(tmp_path, create=True)
    with pytest.raises(BackupError, match="invalid object name"):
        dest.upload("../escape")


def test_retention_rules():
    day = 86_400.0
    now = 100 * day
    backups = [(f"b{i}", now - i * day) for i in range(6)]  # b0 newest
    assert doomed_backups(backups, keep=None, keep_days=None, now=now) == []
    assert doomed_backups(backups, keep=2, keep_days=None, now=now) == ["b2", "b3", "b4", "b5"]
    assert doomed_backups(backups, keep=None, keep_days=2.5, now=now) == ["b3", "b4", "b5"]
    assert doomed_backups(backups, keep=1, keep_days=0, now=now) == ["b1", "b2", "b3", "b4",
                                                                    "b5"]
    with pytest.raises(ValueError):
        doomed_backups(backups, keep=0, keep_days=None, now=now)


def _chunk(first: int, last: int) -> ArchivedChunk:
    from shardkv.backup.repository.record_stream import StoredFile

    return ArchivedChunk("s1", first, last, float(first), float(last), None,
                         StoredFile(f"c{first}", 1, "0", 1, 1))


def test_archive_continuity():
    chunks = [_chunk(1, 10), _chunk(5, 20), _chunk(21, 30), _chunk(40, 50)]
    assert gaps(chunks, 0) == [(31, 39)]
    assert gaps(chunks, 12) == [(31, 39)]
    assert gaps(chunks, 45) == []
    assert [c.first_lsn for c in covering(chunks, 12)] == [5, 21]
    assert [c.first_lsn for c in covering(chunks, 0)] == [1, 5, 21]


class _Trickle:
    """A response that hands out its bytes a few at a time (rows split anywhere)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.closed = data, step, False

    def read(self, _n: int) -> bytes:
        chunk, self.data = self.data[:self.step], self.data[self.step:]
        return chunk

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("step", [1, 7, 1 << 16])
def test_export_rows_pass_through_whatever_the_read_sizes(tmp_path, step):
    import msgpack
    from shardkv.backup.create import MemberFailed, _ExportStream

    rows = _rows(300)
    body = b"".join(msgpack.packb(o, use_bin_type=True)
                    for o in [{"lsn": 9, "epoch": 1}, *rows, {"end": True, "count": 300}])

    def stream(data: bytes) -> _ExportStream:
        export = object.__new__(_ExportStream)
        export._resp = _Trickle(data, step)
        export._unpacker = msgpack.Unpacker(raw=False, use_list=True)
        export.header = export.trailer = None
        export.url = "http://member"
        return export

    dest = LocalDestination(tmp_path, create=True)
    export = stream(body)
    writer = RecordWriter(dest, "s.kv.zst", None)
    for packed, count in export.packed_rows():
        writer.write_packed(packed, count)
    stored = writer.close()
    assert export.header == {"lsn": 9, "epoch": 1} and stored.records == 300
    assert list(read_records(dest, stored, None)) == rows
    with pytest.raises(MemberFailed, match="cut before its end"):
        list(stream(body[:-5]).packed_rows())


def test_a_backup_is_refused_while_a_resharding_runs():
    from shardkv.backup.create import _check_no_migration

    _check_no_migration({"migration": None})
    _check_no_migration({"migration": {"id": "m1", "state": "done"}})
    for state in ("copying", "catching_up", "flipping", "cleaning"):
        with pytest.raises(BackupError, match=r"resharding \(m1\) is in progress"):
            _check_no_migration({"migration": {"id": "m1", "state": state}})

"""The S3 destination against moto's server mode (the real S3 HTTP API on a local port):
multipart uploads of large files, aborts that leave nothing, a whole backup's catalog
(list, verify, delete), and clear errors for a missing bucket or an unreachable endpoint."""

from __future__ import annotations

import os
import secrets

import pytest
from moto_s3 import make_bucket, moto_s3_fixture  # noqa: F401  (registers `moto_s3`)
from shardkv.backup.inspection import delete, verify
from shardkv.backup.repository.catalog import backup_ids
from shardkv.backup.repository.destination import open_destination
from shardkv.backup.repository.errors import DamagedFile, DestinationUnreachable
from shardkv.backup.repository.manifest import Manifest, ShardBackup, manifest_name
from shardkv.backup.repository.record_stream import RecordWriter, read_records

pytestmark = pytest.mark.integration


def test_large_file_goes_up_in_parts_and_reads_back(moto_s3, monkeypatch):
    monkeypatch.setenv("SHARDKV_BACKUP_S3_PART_BYTES", str(5 << 20))
    make_bucket("parts")
    dest = open_destination("s3://parts/cluster-a")
    key = secrets.token_bytes(32)
    rows = [[f"k{i:05d}".encode(), os.urandom(1000), None, i] for i in range(12_000)]
    writer = RecordWriter(dest, "backups/b1/shards/s1.kv.zst.aes", key)
    for row in rows:
        writer.write(row)
    stored = writer.close()
    assert stored.size > 10 << 20
    head = dest.client.head_object(Bucket="parts", Key="cluster-a/" + stored.name)  # type: ignore[attr-defined]
    assert head["ETag"].strip('"').endswith("-3"), "three parts of 5 MiB, 5 MiB and the rest"
    assert list(read_records(dest, stored, key)) == rows
    assert [info.name for info in dest.list()] == [stored.name]

    aborted = RecordWriter(dest, "backups/b1/shards/s2.kv.zst", None)
    for row in rows:
        aborted.write(row)
    aborted.abort()
    assert [info.name for info in dest.list()] == [stored.name]
    uploads = dest.client.list_multipart_uploads(Bucket="parts")  # type: ignore[attr-defined]
    assert not uploads.get("Uploads")


def test_catalog_verify_and_delete_on_s3(moto_s3):
    make_bucket("catalog")
    dest = open_destination("s3://catalog/x")
    writer = RecordWriter(dest, "backups/b1/shards/s1.kv.zst", None)
    writer.write([b"k", b"v", None, 3])
    stored = writer.close()
    shard = ShardBackup("s1", 3, 1, "n1", "replica", 1000.0, 1, stored)
    manifest = Manifest("b1", 1000.0, 1001.0, 4, {}, {}, {"s1": shard})
    dest.put_bytes(manifest_name("b1"), manifest.to_json())
    assert backup_ids(dest) == (["b1"], [])
    assert verify(dest).ok
    dest.put_bytes(stored.name, b"not what was written")
    report = verify(dest)
    assert not report.ok and "s1.kv.zst" in report.problems[0]
    with pytest.raises(DamagedFile):
        list(read_records(dest, stored, None))
    assert delete(dest, backup_id="b1", keep=None, keep_days=None)["deleted"] == ["b1"]
    assert dest.list() == []


def test_missing_bucket_and_unreachable_endpoint(moto_s3, monkeypatch):
    with pytest.raises(DestinationUnreachable, match="NoSuchBucket"):
        open_destination("s3://no-such-bucket/p").list()
    from shardkv.cluster.local_processes import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DestinationUnreachable, match="cannot reach"):
        open_destination("s3://any/p").put_bytes("x", b"1")

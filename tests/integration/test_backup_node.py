"""A node's side of backups on a standalone node: the export endpoint's stream, and WAL
archiving with encryption (chunks decrypt with the key, and hold exactly the writes, in LSN
order, with their values as written and their deletes)."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request

import msgpack
import pytest
from eventually import eventually_async
from shardkv.backup.repository.destination import LocalDestination
from shardkv.backup.repository.record_stream import read_records
from shardkv.backup.repository.wal_archive import DELETE, PUT, list_chunks, read_progress

pytestmark = pytest.mark.integration


def _put(url: str, key: str, value: bytes, query: str = "") -> None:
    request = urllib.request.Request(f"{url}/v1/kv/{key}{query}", data=value, method="PUT")
    urllib.request.urlopen(request, timeout=10).close()


def _delete(url: str, key: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/v1/kv/{key}", method="DELETE"),
                           timeout=10).close()


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _export(url: str) -> list[object]:
    with urllib.request.urlopen(f"{url}/admin/backup/export", timeout=10) as resp:
        return list(msgpack.Unpacker(resp, raw=False))


async def test_export_and_encrypted_archive(node_factory, tmp_path):
    key = secrets.token_bytes(32)
    archive = tmp_path / "archive"
    node = node_factory(env={"SHARDKV_ARCHIVE_TO": str(archive),
                             "SHARDKV_ARCHIVE_INTERVAL_S": "0.1",
                             "SHARDKV_BACKUP_KEY": key.hex()})
    big = b"compressible " * 400  # stored zstd-compressed by the node: exported as written
    _put(node.url, "a", big)
    _put(node.url, "b", b"2", "?ttl=600")
    _delete(node.url, "a")
    _put(node.url, "c", b"3")

    header, *rows, trailer = _export(node.url)
    assert header["lsn"] >= 4 and header["role"] == "primary"
    assert [(r[0], r[1]) for r in rows] == [(b"b", b"2"), (b"c", b"3")]
    assert rows[0][2] is not None and rows[1][2] is None  # expiry times
    assert trailer == {"end": True, "count": 2}

    dest = LocalDestination(archive, create=False)

    async def archived() -> bool:
        progress = read_progress(dest, "default")
        return progress is not None and progress.lsn >= header["lsn"]
    await eventually_async(archived, within_s=15, what="the archive to reach the export's LSN")
    chunks = list_chunks(dest, "default")
    assert all(c.key_id is not None and c.file.name.endswith(".aes") for c in chunks)
    entries = [e for c in chunks for e in read_records(dest, c.file, key)]
    lsns = [e[0] for e in entries]
    assert lsns == list(range(lsns[0], lsns[-1] + 1)), "contiguous, in order"
    mutations = [(m[0], m[1], m[2]) for e in entries for m in e[3]]
    assert mutations == [(PUT, b"a", big), (PUT, b"b", b"2"), (DELETE, b"a", b""),
                         (PUT, b"c", b"3")]
    assert b"compressible" not in (archive / chunks[0].file.name).read_bytes()
    metrics = _text(f"{node.url}/metrics")
    assert f"shardkv_wal_archived_lsn {float(lsns[-1])}" in metrics
    assert "shardkv_wal_archive_chunks_total" in metrics


def _import(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/admin/backup/import", data=body, method="POST",
                                     headers={"Content-Type": "application/msgpack",
                                              "Accept": "application/msgpack"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, msgpack.unpackb(resp.read(), raw=False)
    except urllib.error.HTTPError as exc:
        return exc.code, msgpack.unpackb(exc.read(), raw=False)


async def test_import_writes_rows_with_their_expiry_and_refuses_bad_ones(node_factory):
    import time

    node = node_factory(extra_args=["--max-value-bytes", "1000"])
    expires = time.time() + 3600.5
    records = [[PUT, b"r1", b"one", expires], [PUT, b"r2", b"two", None],
               [DELETE, b"r2", b"", None]]
    status, answer = _import(node.url, msgpack.packb({"records": records}))
    assert status == 200 and answer["applied"] == 3
    assert _text(f"{node.url}/v1/kv/r1") == "one"
    rows = _export(node.url)[1:-1]
    assert rows == [[b"r1", b"one", expires, answer["lsn"]]], "one entry, exact expiry"
    for bad, code in [
        (b"not msgpack \xc1", "INVALID_ARGUMENT"),
        (msgpack.packb({"records": [[PUT, b"k", "text", None]]}), "INVALID_ARGUMENT"),
        (msgpack.packb({"records": [[9, b"k", b"", None]]}), "INVALID_ARGUMENT"),
        (msgpack.packb({"records": [[PUT, b"\x00shardkv:s", b"", None]]}), "INVALID_ARGUMENT"),
        (msgpack.packb({"records": [[PUT, b"k", b"x" * 1001, None]]}), "TOO_LARGE"),
    ]:
        status, answer = _import(node.url, bad)
        assert answer["error"] == code, (bad[:40], answer)


def test_the_export_takes_the_admin_token_where_the_node_has_one(node_factory, monkeypatch):
    from shardkv.backup.cluster_access import admin_headers

    token = secrets.token_hex(16)
    node = node_factory(env={"SHARDKV_ADMIN_TOKEN": token})
    with pytest.raises(urllib.error.HTTPError) as refused:
        _export(node.url)
    assert refused.value.code == 401
    monkeypatch.delenv("SHARDKV_CLUSTER_TOKEN", raising=False)
    monkeypatch.delenv("SHARDKV_CLUSTER_TOKEN_FILE", raising=False)
    monkeypatch.setenv("SHARDKV_ADMIN_TOKEN", token)
    request = urllib.request.Request(f"{node.url}/admin/backup/export",
                                     headers=admin_headers("GET", "/admin/backup/export"))
    with urllib.request.urlopen(request, timeout=10) as resp:
        header, trailer = list(msgpack.Unpacker(resp, raw=False))
    assert "lsn" in header and trailer == {"end": True, "count": 0}

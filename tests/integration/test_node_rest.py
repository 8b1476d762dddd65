"""The node's REST routes against a real process: keys, ETags, conditions, batch, probes."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
from shardkv.cluster import event_loop

pytestmark = pytest.mark.integration


@pytest.fixture
def node(shared_node):
    """These tests use keys of their own and never stop the node: one process serves all."""
    return shared_node


def _etag(response) -> int:
    tag = response.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    return int(tag[1:-1])


async def test_put_get_delete_with_etags(node, http) -> None:
    url = f"{node.url}/v1/kv/user:1"
    async with http.put(url, data=b"alice") as r:
        assert r.status == 200
        body = await r.json()
        v1 = body["version"]
        assert _etag(r) == v1
    async with http.get(url) as r:
        assert r.status == 200
        assert await r.read() == b"alice"
        assert _etag(r) == v1
        assert r.headers["Content-Type"] == "application/octet-stream"

    # If-Match: compare-and-swap on the ETag.
    async with http.put(url, data=b"bob", headers={"If-Match": f'"{v1}"'}) as r:
        assert r.status == 200
        v2 = (await r.json())["version"]
    async with http.put(url, data=b"eve", headers={"If-Match": f'"{v1}"'}) as r:
        assert r.status == 412
        error = await r.json()
        assert error["error"] == "VERSION_MISMATCH" and error["current_version"] == v2
        assert error["retryable"] is False

    # If-None-Match: * writes only if absent.
    async with http.put(url, data=b"eve", headers={"If-None-Match": "*"}) as r:
        assert r.status == 412
    async with http.put(f"{node.url}/v1/kv/fresh", data=b"new",
                        headers={"If-None-Match": "*"}) as r:
        assert r.status == 200

    # Conditional delete, then a plain one.
    async with http.delete(url, headers={"If-Match": f'"{v1}"'}) as r:
        assert r.status == 412
    async with http.delete(url, headers={"If-Match": f'"{v2}"'}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["deleted"] is True and body["version"] > v2
    async with http.delete(url) as r:
        assert (await r.json())["deleted"] is False
    async with http.get(url) as r:
        assert r.status == 404
        assert (await r.json())["error"] == "NOT_FOUND"


async def test_keys_are_percent_encoded_utf8(node, http) -> None:
    # "/" and non-ASCII in a key survive the path.
    async with http.put(f"{node.url}/v1/kv/dir%2Ffile%20%C3%A9", data=b"v") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/v1/kv/dir%2Ffile%20%C3%A9") as r:
        assert r.status == 200 and await r.read() == b"v"


async def test_read_and_write_options(node, http) -> None:
    url = f"{node.url}/v1/kv/opts"
    async with http.put(url, params={"ttl": "60", "w": "majority"}, data=b"v") as r:
        assert r.status == 200
        version = (await r.json())["version"]
    async with http.get(url, params={"consistency": "eventual", "max_staleness_ms": "500",
                                     "min_version": str(version)}) as r:
        assert r.status == 200
        assert float(r.headers["X-Expires-At"]) > 0
    # A primary is never behind itself, except for a version it has not written yet.
    async with http.get(url, params={"min_version": str(version + 1000)}) as r:
        assert r.status == 503
        body = await r.json()
        assert body["error"] == "TOO_STALE" and body["retryable"] is True
    for params in ({"w": "all"}, {"ttl": "-1"}, {"ttl": "soon"}, {"consistency": "weak"},
                   {"tll": "5"}):
        async with http.put(url, params=params, data=b"x") as r:
            assert r.status == 400, params
            assert (await r.json())["error"] == "INVALID_ARGUMENT"
    async with http.get(url) as r:
        assert await r.read() == b"v"  # none of the refused writes landed


async def test_msgpack_answers_when_asked(node, http) -> None:
    headers = {"Accept": "application/msgpack"}
    async with http.put(f"{node.url}/v1/kv/mp", data=b"v", headers=headers) as r:
        assert r.headers["Content-Type"] == "application/msgpack"
        assert "version" in msgpack.unpackb(await r.read())
    async with http.get(f"{node.url}/v1/kv/absent", headers=headers) as r:
        assert r.status == 404
        assert msgpack.unpackb(await r.read())["error"] == "NOT_FOUND"


async def test_batch_in_json_and_msgpack(node, http) -> None:
    binary = bytes(range(250, 256))
    body = {"ops": [
        {"op": "put", "key": "b:text", "value": "hello"},
        {"op": "put", "key": "b:bin", "value": {"b64": base64.b64encode(binary).decode()}},
        {"op": "delete", "key": "b:none"},
    ]}
    async with http.post(f"{node.url}/v1/batch", json=body) as r:
        assert r.status == 200
        result = await r.json()
    assert [x["key"] for x in result["results"]] == ["b:text", "b:bin", "b:none"]
    async with http.get(f"{node.url}/v1/kv/b:bin") as r:
        assert await r.read() == binary
        assert _etag(r) == result["version"]

    packed = msgpack.packb({"ops": [
        {"op": "put", "key": b"b:text", "value": b"x", "if_version": result["version"]},
        {"op": "put", "key": b"b:bin", "value": b"y", "if_version": result["version"] + 9},
    ]})
    async with http.post(f"{node.url}/v1/batch", data=packed,
                         headers={"Content-Type": "application/msgpack"}) as r:
        assert r.status == 412
        error = msgpack.unpackb(await r.read())
        assert error["error"] == "VERSION_MISMATCH" and error["index"] == 1
    async with http.get(f"{node.url}/v1/kv/b:text") as r:
        assert await r.read() == b"hello"  # the failed batch wrote nothing


async def test_probes_status_and_metrics(node, http) -> None:
    async with http.get(f"{node.url}/health") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/ready") as r:
        ready = await r.json()
        assert r.status == 200 and ready["role"] == "primary"
        assert {"lsn", "epoch"} <= set(ready)
    async with http.put(f"{node.url}/v1/kv/m", data=b"v") as r:
        assert r.status == 200
    async with http.get(f"{node.url}/v1/status") as r:
        status = await r.json()
    assert status["engine"] == "memory" and status["data_dir"] == str(node.data_dir)
    assert status["keys"] >= 1 and status["last_lsn"] >= 1 and status["role"] == "primary"
    # The node runs on the loop cluster/event_loop.py picks (uvloop on Linux, a dependency).
    assert status["event_loop"] == event_loop.loop_name()
    async with http.get(f"{node.url}/metrics") as r:
        text = await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")
    assert 'shardkv_ops_total{op="put",outcome="ok"}' in text
    assert 'shardkv_op_duration_seconds_bucket{le="0.001",op="put"}' in text
    for name in ("shardkv_keys", "shardkv_wal_bytes", "shardkv_wal_segments",
                 "shardkv_process_resident_memory_bytes", "shardkv_wal_fsync_duration_seconds",
                 "shardkv_wal_group_commit_entries"):
        assert name in text, name
    assert json.loads(json.dumps(status))  # plain JSON, no custom types

"""``/v1/rpc`` against a real node process: every op of docs/protocol.md, and pipelining."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def node(shared_node):
    """These tests use keys of their own and never stop the node: one process serves all."""
    return shared_node


async def test_every_op(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)

    ping = await rpc.call("ping")
    assert ping["role"] == "primary" and isinstance(ping["lsn"], int)

    v1 = (await rpc.call("put", key=b"user:1", value=b"alice"))["version"]
    assert v1 > ping["lsn"]
    got = await rpc.call("get", key=b"user:1")
    assert got == {"value": b"alice", "version": v1, "expires_at": None}
    # A str key is taken as UTF-8, and read options are accepted by a primary.
    got = await rpc.call("get", key="user:1", consistency="eventual", max_staleness_ms=100,
                         min_version=v1)
    assert got["value"] == b"alice"

    assert await rpc.call("exists", key=b"user:1") == {"exists": True, "version": v1}
    assert await rpc.call("exists", key=b"nobody") == {"exists": False, "version": None}

    status, error = await rpc.call_raw("get", {"key": b"nobody"})
    assert status == "NOT_FOUND" and error["error"] == "NOT_FOUND"
    assert error["retryable"] is False

    # Compare-and-swap, both ways.
    v2 = (await rpc.call("put", key=b"user:1", value=b"bob", if_version=v1, w="one"))["version"]
    assert v2 > v1
    status, error = await rpc.call_raw("put", {"key": b"user:1", "value": b"eve",
                                               "if_version": v1})
    assert status == "VERSION_MISMATCH" and error["current_version"] == v2
    status, error = await rpc.call_raw("put", {"key": b"user:1", "value": b"eve",
                                               "if_absent": True})
    assert status == "VERSION_MISMATCH"
    assert (await rpc.call("get", key=b"user:1"))["value"] == b"bob"

    # Counters.
    assert (await rpc.call("incr", key=b"hits"))["value"] == 1
    counted = await rpc.call("incr", key=b"hits", delta=41)
    assert counted["value"] == 42
    assert (await rpc.call("get", key=b"hits"))["value"] == b"42"

    # Multi-key ops.
    mv = (await rpc.call("mput", items=[[b"m:1", b"one"], [b"m:2", b"two"]]))["version"]
    items = (await rpc.call("mget", keys=[b"m:1", b"missing", b"m:2"]))["items"]
    assert items[0] == {"value": b"one", "version": mv, "expires_at": None}
    assert items[1] is None and items[2]["version"] == mv
    deleted = await rpc.call("mdelete", keys=[b"m:1", b"m:2", b"missing"])
    assert deleted["deleted"] == 2 and deleted["version"] > mv

    # Delete, conditional and not.
    status, error = await rpc.call_raw("delete", {"key": b"user:1", "if_version": v1})
    assert status == "VERSION_MISMATCH"
    gone = await rpc.call("delete", key=b"user:1", if_version=v2)
    assert gone["deleted"] is True and gone["version"] > v2
    assert (await rpc.call("delete", key=b"user:1"))["deleted"] is False

    # TTL and expire.
    await rpc.call("put", key=b"session", value=b"s", ttl=60)
    left = (await rpc.call("ttl", key=b"session"))["ttl"]
    assert 0 < left <= 60
    await rpc.call("put", key=b"forever", value=b"f")
    assert (await rpc.call("ttl", key=b"forever"))["ttl"] is None
    await rpc.call("expire", key=b"forever", ttl=120)
    assert 60 < (await rpc.call("ttl", key=b"forever"))["ttl"] <= 120
    status, _ = await rpc.call_raw("ttl", {"key": b"nobody"})
    assert status == "NOT_FOUND"
    status, _ = await rpc.call_raw("expire", {"key": b"nobody", "ttl": 5})
    assert status == "NOT_FOUND"


async def test_ttl_expiry_hides_the_key(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    await rpc.call("put", key=b"brief", value=b"x", ttl=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _ = await rpc.call_raw("get", {"key": b"brief"})
        if status == "NOT_FOUND":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("a key with a 0.2 s ttl was still visible after 10 s")
    assert (await rpc.call("exists", key=b"brief"))["exists"] is False


async def test_batch_is_all_or_nothing(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    base = (await rpc.call("put", key=b"acct:a", value=b"100"))["version"]
    result = await rpc.call("batch", ops=[
        {"op": "put", "key": b"acct:a", "value": b"90", "if_version": base},
        {"op": "put", "key": b"acct:b", "value": b"10", "if_absent": True},
        {"op": "delete", "key": b"acct:none"},
    ])
    version = result["version"]
    assert [r["op"] for r in result["results"]] == ["put", "put", "delete"]
    assert (await rpc.call("get", key=b"acct:b"))["version"] == version

    # The second condition fails: nothing of the batch is written.
    status, error = await rpc.call_raw("batch", {"ops": [
        {"op": "put", "key": b"acct:c", "value": b"new"},
        {"op": "put", "key": b"acct:a", "value": b"0", "if_version": base},
    ]})
    assert status == "VERSION_MISMATCH"
    assert error["index"] == 1 and error["key"] == b"acct:a"
    assert error["current_version"] == version
    assert (await rpc.call("exists", key=b"acct:c"))["exists"] is False
    assert (await rpc.call("get", key=b"acct:a"))["value"] == b"90"


async def test_scan_pages_through_a_prefix_and_a_range(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    keys = [f"scan:{i:03d}".encode() for i in range(25)]
    await rpc.call("mput", items=[[k, k.upper()] for k in keys])
    await rpc.call("put", key=b"scan;after", value=b"-")
    await rpc.call("put", key=b"scaa", value=b"-")

    seen: list[bytes] = []
    cursor = None
    pages = 0
    while True:
        args = {"prefix": b"scan:", "limit": 10}
        if cursor is not None:
            args["cursor"] = cursor
        page = await rpc.call("scan", **args)
        pages += 1
        seen.extend(item[0] for item in page["items"])
        assert all(item[1] == item[0].upper() for item in page["items"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == keys and pages >= 3

    ranged = await rpc.call("scan", start=b"scan:005", end=b"scan:010", limit=100)
    assert [item[0] for item in ranged["items"]] == keys[5:10]
    assert ranged["cursor"] is None


async def test_many_requests_in_flight_on_one_socket(node, rpc_connect) -> None:
    """Hundreds of requests sent before any answer is read: each is answered once, under
    its own id, and the writes all happened."""
    rpc = await rpc_connect(node.rpc_url)
    count = 500
    for i in range(count):
        op = "put" if i % 2 == 0 else "incr"
        args = {"key": f"p:{i}".encode(), "value": str(i).encode()} if op == "put" else {
            "key": b"p:counter"}
        await rpc.send([i, op, args])
    answers = {}
    for _ in range(count):
        request_id, status, result = await rpc.receive()
        assert status == "ok", result
        assert request_id not in answers
        answers[request_id] = result
    assert sorted(answers) == list(range(count))
    assert (await rpc.call("get", key=b"p:counter"))["value"] == str(count // 2).encode()
    versions = [answers[i]["version"] for i in range(0, count, 2)]
    assert len(set(versions)) == len(versions)  # every write got its own LSN


async def test_backpressure_bound_still_answers_everything(node_factory, rpc_connect) -> None:
    """With at most 4 requests in flight per connection, 300 pipelined requests are all
    served: the node just stops reading the socket while the bound is reached."""
    node = node_factory(env={"SHARDKV_MAX_INFLIGHT_PER_CONNECTION": "4"})
    rpc = await rpc_connect(node.rpc_url)
    for i in range(300):
        await rpc.send([i, "incr", {"key": b"bp"}])
    answers = [await rpc.receive() for _ in range(300)]
    assert sorted(a[0] for a in answers) == list(range(300))
    assert sorted(a[2]["value"] for a in answers) == list(range(1, 301))


async def test_answers_come_back_in_completion_order(node_factory, rpc_connect, http) -> None:
    """A durable write does not hold up a read sent after it on the same socket: with the
    write's fsync held (failpoint ``wal_before_sync=pause``), the read is answered while the
    write still waits; a connection that answered in request order would never answer it."""
    node = node_factory(fsync="always", env={"SHARDKV_TEST_ADMIN": "1"})
    rpc = await rpc_connect(node.rpc_url)
    await rpc.call("put", key=b"k", value=b"v")

    async def failpoint(action: bytes) -> None:
        async with http.put(f"{node.url}/admin/failpoints/wal_before_sync",
                            data=action) as resp:
            assert resp.status == 200, await resp.text()

    await failpoint(b"pause")
    try:
        await rpc.send([1, "put", {"key": b"held", "value": b"x" * 10_000}])
        await rpc.send([2, "get", {"key": b"k"}])
        first = await asyncio.wait_for(rpc.receive(), 10)
        assert first[0] == 2 and first[1] == "ok"  # the read, while the write is held
    finally:
        await failpoint(b"off")
    second = await asyncio.wait_for(rpc.receive(), 10)
    assert second[0] == 1 and second[1] == "ok"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
async def test_smoke_on_each_engine_survives_restart(
    node_factory, rpc_connect, http, engine
) -> None:
    node = node_factory(engine=engine, fsync="always")
    rpc = await rpc_connect(node.rpc_url)
    version = (await rpc.call("put", key=b"durable", value=b"yes"))["version"]
    batch = await rpc.call("batch", ops=[{"op": "put", "key": b"b1", "value": b"1"},
                                          {"op": "put", "key": b"b2", "value": b"2"}])
    async with http.get(f"{node.url}/metrics") as r:
        text = await r.text()
    # fsync=always: each acknowledged write went through a sync, seen by WalOptions.on_sync.
    assert _metric(text, "shardkv_wal_fsyncs_total") >= 2
    assert _metric(text, "shardkv_wal_group_commit_entries_count") >= 2
    # The sqlite engine applies in the background: the key count catches up shortly.
    deadline = time.monotonic() + 10
    while _metric(text, "shardkv_keys") != 3:
        assert time.monotonic() < deadline, "shardkv_keys never reached 3"
        await asyncio.sleep(0.05)
        async with http.get(f"{node.url}/metrics") as r:
            text = await r.text()
    await rpc.ws.close()
    assert node.terminate() == 0
    await asyncio.to_thread(node.start)
    rpc = await rpc_connect(node.rpc_url)
    assert await rpc.call("get", key=b"durable") == {"value": b"yes", "version": version,
                                                       "expires_at": None}
    items = (await rpc.call("mget", keys=[b"b1", b"b2"]))["items"]
    assert [it["version"] for it in items] == [batch["version"]] * 2

"""Batched ``/v1/rpc`` messages (cluster/rpc_batches.py) against real node processes: agreed
in the handshake, refused cleanly by either side's switch, every request of a batch answered
on its own, a malformed batch answered without losing the connection, and a node killed with
a batch in flight failing exactly what is pending as maybe executed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
from eventually import eventually
from shardkv.client.connection import ConnectionFailed, NodeConnection
from shardkv.cluster import rpc_batches
from shardkv.cluster.errors import NotFound, TooLarge, UnknownOp

pytestmark = pytest.mark.integration

OFF = {"SHARDKV_RPC_BATCH": "0"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _connected(url: str, session: aiohttp.ClientSession) -> NodeConnection:
    conn = NodeConnection(url, session)
    await conn.call("ping", {}, 10.0)
    return conn


async def _raw_batch_socket(node: Any, session: aiohttp.ClientSession
                            ) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(node.rpc_url, protocols=(rpc_batches.SUBPROTOCOL,))
    assert ws.protocol == rpc_batches.SUBPROTOCOL
    return ws


async def _answers(ws: aiohttp.ClientWebSocketResponse) -> list[list[Any]]:
    async with asyncio.timeout(10):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.BINARY, msg
    answers: list[list[Any]] = msgpack.unpackb(msg.data)
    return answers


async def test_batching_is_agreed_and_many_mixed_requests_get_their_own_answers(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    node = node_factory()
    conn = await _connected(node.url, session)
    assert conn._ws is not None and conn._ws.protocol == rpc_batches.SUBPROTOCOL
    await conn.call("put", {"key": b"present", "value": b"here"}, 10.0)

    calls: list[tuple[str, dict[str, Any]]] = []
    for i in range(300):
        kind = i % 5
        if kind == 0:
            calls.append(("put", {"key": f"k{i}".encode(), "value": f"v{i}".encode()}))
        elif kind == 1:
            calls.append(("get", {"key": b"present"}))
        elif kind == 2:
            calls.append(("get", {"key": f"absent{i}".encode()}))
        elif kind == 3:
            calls.append(("no_such_op", {}))
        else:
            calls.append(("put", {"key": f"big{i}".encode(), "value": b"x" * (2 << 20)}))
    results = await asyncio.gather(*(conn.call(op, args, 30.0) for op, args in calls),
                                   return_exceptions=True)
    for i, result in enumerate(results):
        kind = i % 5
        if kind == 0:
            assert isinstance(result, dict) and result["version"] > 0, (i, result)
        elif kind == 1:
            assert isinstance(result, dict) and result["value"] == b"here", (i, result)
        elif kind == 2:
            assert isinstance(result, NotFound), (i, result)
        elif kind == 3:
            assert isinstance(result, UnknownOp) and "no_such_op" in str(result), result
        else:
            assert isinstance(result, TooLarge), (i, result)
    # Each put landed under its own key.
    got = await asyncio.gather(*(conn.call("get", {"key": f"k{i}".encode()}, 10.0)
                                 for i in range(0, 300, 5)))
    assert [g["value"] for g in got] == [f"v{i}".encode() for i in range(0, 300, 5)]
    await conn.close()


@pytest.mark.parametrize("off", ["node", "client"])
async def test_either_side_switched_off_keeps_one_frame_per_message(
        node_factory: Any, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        off: str) -> None:
    node = node_factory(env=OFF if off == "node" else {})
    if off == "client":
        monkeypatch.setenv("SHARDKV_RPC_BATCH", "0")
    conn = await _connected(node.url, session)
    assert conn._ws is not None and conn._ws.protocol is None
    results = await asyncio.gather(*(conn.call("put", {"key": b"k%d" % i, "value": b"v"}, 10.0)
                                     for i in range(50)))
    assert len({r["version"] for r in results}) == 50
    with pytest.raises(NotFound):
        await conn.call("get", {"key": b"missing"}, 10.0)
    await conn.close()


async def test_an_old_client_is_served_one_frame_per_message(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    node = node_factory()
    ws = await session.ws_connect(node.rpc_url)  # offers no subprotocol, as an old client
    assert ws.protocol is None
    await ws.send_bytes(msgpack.packb([7, "ping", {}]))
    async with asyncio.timeout(10):
        answer = msgpack.unpackb((await ws.receive()).data)
    assert answer[0] == 7 and answer[1] == "ok"
    await ws.close()


async def test_a_malformed_batch_is_answered_and_the_connection_stays_usable(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    node = node_factory()
    ws = await _raw_batch_socket(node, session)
    for garbage in (b"\xc1", msgpack.packb({"not": "a batch"}),
                    b"\xdd\xff\xff\xff\xff", msgpack.packb([[1, "ping", {}]])[:-2]):
        await ws.send_bytes(garbage)
        [answer] = await _answers(ws)
        assert answer[0] is None and answer[1] == "INVALID_ARGUMENT", answer
        assert "batch" in answer[2]["message"]
    # Bad frames inside a good batch are answered one by one, by id where there is one.
    await ws.send_bytes(rpc_batches.join([
        msgpack.packb([1, "ping", {}]), msgpack.packb("not a frame"),
        msgpack.packb([2, "get"]), msgpack.packb([3, "get", {"key": b"nope"}])]))
    answers: list[list[Any]] = []
    while len(answers) < 4:
        answers += await _answers(ws)
    by_id = {a[0]: a[1] for a in answers if a[0] is not None}
    assert by_id == {1: "ok", 2: "INVALID_ARGUMENT", 3: "NOT_FOUND"}
    assert [a[1] for a in answers if a[0] is None] == ["INVALID_ARGUMENT"]
    await ws.close()


async def test_a_frame_over_the_limit_in_a_batch_is_refused_on_its_own(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    node = node_factory()
    ws = await _raw_batch_socket(node, session)
    huge = msgpack.packb([5, "put", {"key": b"k", "value": b"x" * (33 << 20)}])
    await ws.send_bytes(rpc_batches.join([huge, msgpack.packb([6, "ping", {}])]))
    answers: list[list[Any]] = []
    while len(answers) < 2:
        answers += await _answers(ws)
    assert {a[0]: a[1] for a in answers} == {5: "TOO_LARGE", 6: "ok"}
    await ws.close()


async def test_a_node_killed_mid_batch_fails_what_is_pending_as_maybe_executed(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    node = node_factory()
    conn = await _connected(node.url, session)
    node.pause()  # the batch reaches the socket but is never answered
    calls = [asyncio.ensure_future(conn.call("put", {"key": b"k%d" % i, "value": b"v"}, 60.0))
             for i in range(40)]
    assert conn._batches is not None
    batches = conn._batches
    await eventually(lambda: not batches.unsent and conn.in_flight == 40,
                     what="the batch written")
    node.kill()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ConnectionFailed) and r.maybe_executed for r in results), results
    await conn.close()


async def test_sigterm_answers_every_batched_request_before_the_close(
        node_factory: Any, session: aiohttp.ClientSession) -> None:
    """The drain flushes the answers it gathered before its close frame (1001)."""
    node = node_factory()
    ws = await _raw_batch_socket(node, session)
    count = 200
    for start in range(0, count, 50):
        await ws.send_bytes(rpc_batches.join([
            msgpack.packb([i, "put", {"key": b"t:%d" % i, "value": b"v"}])
            for i in range(start, start + 50)]))
    node.proc.send_signal(signal.SIGTERM)
    answered: dict[int, str] = {}
    async with asyncio.timeout(30):
        async for msg in ws:
            for request_id, status, _ in msgpack.unpackb(msg.data):
                answered[request_id] = status
    assert set(answered) == set(range(count))
    assert set(answered.values()) <= {"ok", "UNAVAILABLE"}
    assert ws.close_code == 1001
    assert await asyncio.to_thread(node.proc.wait, 30) == 0

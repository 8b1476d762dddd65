"""Bad input against a real node: each mistake gets its error code, the connection and the
node stay up, and data stored before is untouched afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardkv.cluster.limits import MAX_BATCH_OPS, MAX_FRAME_BYTES, MAX_KEY_BYTES
from shardkv.node.api.rpc import FRAME_READ_LIMIT

pytestmark = pytest.mark.integration


@pytest.fixture
def node(shared_node):
    """These tests use keys of their own and never stop the node: one process serves all."""
    return shared_node

SEED = {b"seed:1": b"one", b"seed:2": b"two" * 100}


async def _seed(rpc) -> dict[bytes, int]:
    return {k: (await rpc.call("put", key=k, value=v))["version"] for k, v in SEED.items()}


async def _assert_intact(rpc, versions: dict[bytes, int]) -> None:
    """The seeded keys hold exactly what they held, and the node answers on this socket."""
    for key, version in versions.items():
        got = await rpc.call("get", key=key)
        assert (got["value"], got["version"]) == (SEED[key], version)


BAD_REQUESTS = [
    # (op, args, expected code)
    ("nope", {}, "UNKNOWN_OP"),
    (7, {}, "UNKNOWN_OP"),
    ("get", [], "INVALID_ARGUMENT"),
    ("get", {}, "INVALID_ARGUMENT"),
    ("get", {"key": b""}, "INVALID_ARGUMENT"),
    ("get", {"key": b"k" * (MAX_KEY_BYTES + 1)}, "INVALID_ARGUMENT"),
    ("get", {"key": 12}, "INVALID_ARGUMENT"),
    ("get", {"key": b"k", "consistency": "sometimes"}, "INVALID_ARGUMENT"),
    ("get", {"key": b"k", "max_staleness_ms": -1}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1"}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": 5}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "if_version": -1}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "if_version": True}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "if_verison": 1}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "ttl": 0}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "ttl": "1"}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "w": "all"}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x", "if_absent": "yes"}, "INVALID_ARGUMENT"),
    ("put", {"key": b"seed:1", "value": b"x" * ((1 << 20) + 1)}, "TOO_LARGE"),
    ("incr", {"key": b"seed:1"}, "INVALID_ARGUMENT"),  # not a decimal integer
    ("incr", {"key": b"c", "delta": 1.5}, "INVALID_ARGUMENT"),
    ("incr", {"key": b"c", "delta": 2**63}, "INVALID_ARGUMENT"),
    ("mget", {"keys": b"seed:1"}, "INVALID_ARGUMENT"),
    ("mget", {"keys": [b"seed:1", None]}, "INVALID_ARGUMENT"),
    ("mput", {"items": [[b"seed:1"]]}, "INVALID_ARGUMENT"),
    ("mput", {"items": {b"seed:1": b"x"}}, "INVALID_ARGUMENT"),
    ("mput", {"items": []}, "INVALID_ARGUMENT"),
    ("mput", {"items": [[b"seed:1", b"x"], [b"", b"y"]]}, "INVALID_ARGUMENT"),
    ("mdelete", {"keys": [b"seed:1", b""]}, "INVALID_ARGUMENT"),
    ("batch", {"ops": []}, "INVALID_ARGUMENT"),
    ("batch", {"ops": "put"}, "INVALID_ARGUMENT"),
    ("batch", {"ops": [{"op": "put", "key": b"seed:1", "value": b"x"}, {"op": "swap",
                                                                         "key": b"seed:2"}]},
     "INVALID_ARGUMENT"),
    ("batch", {"ops": [{"op": "delete", "key": b"seed:1"}, {"op": "put", "key": b"seed:2"}]},
     "INVALID_ARGUMENT"),
    ("batch", {"ops": [{"op": "delete", "key": b"seed:1", "extra": 1}]}, "INVALID_ARGUMENT"),
    ("batch", {"ops": [{"op": "delete", "key": b"seed:1"}] * (MAX_BATCH_OPS + 1)},
     "TOO_LARGE"),
    ("scan", {"limit": 0}, "INVALID_ARGUMENT"),
    ("scan", {"prefix": b"a", "start": b"a"}, "INVALID_ARGUMENT"),
    ("scan", {"cursor": 5}, "INVALID_ARGUMENT"),
    ("expire", {"key": b"seed:1"}, "INVALID_ARGUMENT"),
    ("expire", {"key": b"seed:1", "ttl": -3}, "INVALID_ARGUMENT"),
    ("ttl", {"key": None}, "INVALID_ARGUMENT"),
    ("get", {"key": b"seed:1", "ring_version": "3"}, "INVALID_ARGUMENT"),
]


async def test_each_bad_request_gets_its_code(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    versions = await _seed(rpc)
    for op, args, code in BAD_REQUESTS:
        status, error = await rpc.call_raw(op, args)
        assert status == code, (op, args, status, error)
        assert error["error"] == code and isinstance(error["message"], str)
        assert "Traceback" not in error["message"]
    await _assert_intact(rpc, versions)


async def test_malformed_frames_are_answered_and_the_socket_stays_usable(
    node, rpc_connect
) -> None:
    rpc = await rpc_connect(node.rpc_url)
    versions = await _seed(rpc)
    frames = [
        # (frame, the id the node can still recover from it)
        (b"\xc1", None),  # never valid msgpack
        (b"\x93\x01", 1),  # a truncated array: its id is readable, the rest is not
        (msgpack.packb([1, "get"]), 1),  # two elements
        (msgpack.packb({"id": 1, "op": "get"}), None),
        (msgpack.packb(["one", "get", {"key": b"seed:1"}]), None),  # id not an integer
        (msgpack.packb([1.5, "get", {"key": b"seed:1"}]), None),
        (msgpack.packb([True, "get", {"key": b"seed:1"}]), None),
        (msgpack.packb([2**64 - 1, "get", {"key": b"seed:1"}]), None),
        (msgpack.packb([3, "get", {"key": b"seed:1"}]) + b"trailing", 3),
    ]
    for frame, expected_id in frames:
        await rpc.ws.send_bytes(frame)
        request_id, status, error = await rpc.receive()
        assert (request_id, status) == (expected_id, "INVALID_ARGUMENT"), (frame, error)
    await rpc.ws.send_str('[1, "get", {"key": "seed:1"}]')
    request_id, status, error = await rpc.receive()
    assert status == "INVALID_ARGUMENT" and "text" in error["message"]
    await _assert_intact(rpc, versions)


async def test_an_oversized_frame_is_refused_with_its_id(node, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    versions = await _seed(rpc)
    frame = msgpack.packb([77, "put", {"key": b"seed:1", "value": b"\0" * MAX_FRAME_BYTES}])
    await rpc.ws.send_bytes(frame)
    request_id, status, error = await rpc.receive()
    assert (request_id, status) == (77, "TOO_LARGE"), error
    await _assert_intact(rpc, versions)

    # Far beyond the limit the node will not even buffer the frame: it closes that socket
    # (1009, message too big), and only that socket.
    # The node may drop the socket before the client has finished sending.
    with contextlib.suppress(ConnectionError):
        await rpc.ws.send_bytes(b"\0" * (FRAME_READ_LIMIT + 1))
    async with asyncio.timeout(30):
        msg = await rpc.ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR), msg
    assert rpc.ws.close_code in (aiohttp.WSCloseCode.MESSAGE_TOO_BIG,
                                 aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
    fresh = await rpc_connect(node.rpc_url)
    await _assert_intact(fresh, versions)


_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=True) | st.binary(max_size=8) | st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
_ARG_NAMES = ["key", "keys", "value", "items", "ops", "if_version", "if_absent", "ttl", "delta",
              "prefix", "start", "end", "cursor", "limit", "consistency", "min_version", "w"]
# Frames shaped like requests, with arguments of every type: exercises each op's parsing.
_requests = st.builds(
    lambda rid, op, args: msgpack.packb([rid, op, args]),
    st.integers(0, 2**31),
    st.sampled_from(["get", "exists", "put", "delete", "incr", "mget", "mput", "mdelete",
                     "batch", "scan", "expire", "ttl", "ping", "nope"]),
    st.dictionaries(st.sampled_from(_ARG_NAMES), _values, max_size=4) | _values,
)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(st.binary(max_size=256), st.builds(msgpack.packb, _values), _requests))
def test_arbitrary_bytes_never_break_the_node(node, payload: bytes) -> None:
    """Any frame gets exactly one well-formed answer; nothing crashes the node."""

    async def exchange() -> list:
        async with aiohttp.ClientSession() as session, session.ws_connect(node.rpc_url) as ws:
            await ws.send_bytes(payload)
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            answer = msgpack.unpackb(msg.data, raw=False)
            await ws.send_bytes(msgpack.packb([1, "ping", {}]))
            pong = msgpack.unpackb((await ws.receive(timeout=10)).data, raw=False)
            assert pong[:2] == [1, "ok"]
            return answer

    answer = asyncio.run(exchange())
    assert isinstance(answer, list) and len(answer) == 3
    _, status, result = answer
    if status != "ok":
        assert status in {"INVALID_ARGUMENT", "UNKNOWN_OP", "NOT_FOUND", "TOO_LARGE",
                          "VERSION_MISMATCH"}, answer
        assert result["error"] == status


async def test_rest_bad_input(node, http, rpc_connect) -> None:
    rpc = await rpc_connect(node.rpc_url)
    versions = await _seed(rpc)
    url = f"{node.url}/v1/kv/seed:1"
    batch = f"{node.url}/v1/batch"
    as_json = {"Content-Type": "application/json"}
    cases = [
        # (method, url, request options, status, code)
        ("PUT", url, {"data": b"x", "headers": {"If-Match": 'W/"1"'}}, 400, "INVALID_ARGUMENT"),
        ("PUT", url, {"data": b"x", "headers": {"If-Match": "banana"}}, 400,
         "INVALID_ARGUMENT"),
        ("PUT", url, {"data": b"x", "headers": {"If-None-Match": '"3"'}}, 400,
         "INVALID_ARGUMENT"),
        ("PUT", url, {"data": b"x" * ((1 << 20) + 1)}, 413, "TOO_LARGE"),
        ("PUT", f"{node.url}/v1/kv/" + "k" * (MAX_KEY_BYTES + 1), {"data": b"x"}, 400,
         "INVALID_ARGUMENT"),
        ("PUT", f"{node.url}/v1/kv/", {"data": b"x"}, 400, "INVALID_ARGUMENT"),
        ("DELETE", url, {"params": {"if_version": "1"}}, 400, "INVALID_ARGUMENT"),
        ("POST", batch, {"data": b"{not json", "headers": as_json}, 400, "INVALID_ARGUMENT"),
        ("POST", batch, {"data": b"\xc1\xc1", "headers": {"Content-Type": "application/msgpack"}},
         400, "INVALID_ARGUMENT"),
        ("POST", batch, {"json": [1, 2]}, 400, "INVALID_ARGUMENT"),
        ("POST", batch, {"json": {"ops": []}}, 400, "INVALID_ARGUMENT"),
        ("POST", batch, {"json": {"ops": [{"op": "put", "key": "seed:1",
                                           "value": {"b64": "***"}}]}}, 400, "INVALID_ARGUMENT"),
        ("POST", batch, {"json": {"ops": [{"op": "put", "key": "seed:1",
                                           "value": {"hex": "00"}}]}}, 400, "INVALID_ARGUMENT"),
        ("GET", f"{node.url}/v1/nothing-here", {}, 404, "NOT_FOUND"),
        ("PATCH", url, {"data": b"x"}, 405, "INVALID_ARGUMENT"),
    ]
    for method, target, options, status, code in cases:
        async with http.request(method, target, **options) as r:
            raw = await r.read()
            if r.content_type == "application/msgpack":
                body = msgpack.unpackb(raw)
            else:
                assert r.content_type == "application/json", raw
                body = json.loads(raw)
            assert (r.status, body["error"]) == (status, code), (method, target, body)
            assert body["retryable"] is False
    async with http.get(f"{node.url}/health") as r:
        assert r.status == 200
    await _assert_intact(rpc, versions)


async def test_a_body_over_the_limit_is_refused_before_it_is_read(node, http) -> None:
    """A declared Content-Length over the value limit is answered at once (the client has
    not sent the body yet), and a chunked body is cut off as soon as it passes the limit."""

    async def endless():
        for _ in range(10_000):  # 640 MiB if the node kept reading
            yield b"\0" * 65536

    try:
        async with http.put(f"{node.url}/v1/kv/huge", data=endless()) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "TOO_LARGE"
    except aiohttp.ClientOSError:
        # The node answered 413 and closed while the client was still writing the body:
        # on a loaded machine the client can see the reset before it reads the answer.
        pass
    async with http.get(f"{node.url}/v1/kv/huge") as r:
        assert r.status == 404


async def test_expect_100_continue(node) -> None:
    """curl sends ``Expect: 100-continue`` for large bodies: an oversized one is refused
    before a byte of it is sent; a fitting one is invited and stored."""

    async def exchange(head: bytes, body: bytes | None) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        try:
            writer.write(head)
            first = await reader.readuntil(b"\r\n\r\n")
            if body is None:
                return first
            writer.write(body)
            return first + await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()

    big = (1 << 20) + 1
    async with asyncio.timeout(10):
        refused = await exchange(
            b"PUT /v1/kv/expect:big HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(big).encode() + b"\r\nExpect: 100-continue\r\n\r\n", None)
        assert refused.startswith(b"HTTP/1.1 413"), refused
        invited = await exchange(
            b"PUT /v1/kv/expect:small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n", b"hello")
        assert invited.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), invited
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/v1/kv/expect:small") as r:
            assert await r.read() == b"hello"
        async with http.get(f"{node.url}/v1/kv/expect:big") as r:
            assert r.status == 404

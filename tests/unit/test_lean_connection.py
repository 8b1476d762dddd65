"""The lean lane's connection (node/api/lean_connection.py) and head reader
(node/api/lean_request.py) in-process: which heads the lane takes, requests served one after
the other, answers ready at once leaving in one write, the read-ahead bound, and the
handover to aiohttp after the answer owed is written. The differential tests against
aiohttp on real nodes are tests/integration/test_lean_lane.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from shardkv.node.api.lean_connection import READ_AHEAD, LeanConnection, Slot
from shardkv.node.api.lean_request import HeadReader, LeanRequest

WRK_PUT = (b"PUT /v1/kv/bench:00000042 HTTP/1.1\r\nHost: 127.0.0.1:7100\r\n"
           b"Content-Length: 5\r\n\r\nvalue")


def _get(key: str, extra: bytes = b"") -> bytes:
    return b"GET /v1/kv/%s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (key.encode(), extra)


def test_the_reader_takes_the_common_requests_and_carries_on() -> None:
    reader = HeadReader()
    head, body = WRK_PUT.split(b"\r\n\r\n")
    request = reader.read(head + b"\r\n\r\n", max_body=1 << 20)
    assert request == LeanRequest(True, "bench:00000042", [], None, None, None, None, 5, True)
    assert reader.body(body)
    request = reader.read(_get("a%2Fb?consistency=eventual&max_staleness_ms=5",
                               b"If-Match: \"3\"  \r\nAccept: application/msgpack\r\n"), 1)
    assert request is not None and request.key == "a/b"
    assert request.query == [("consistency", "eventual"), ("max_staleness_ms", "5")]
    assert (request.if_match, request.accept) == ('"3"', "application/msgpack")


@pytest.mark.parametrize("head", [
    _get("a").replace(b"HTTP/1.1", b"HTTP/1.0"),
    _get("a").replace(b"Host: x\r\n", b""),
    _get("a", b"Expect: 100-continue\r\n"),
    _get("a", b"Accept: \xc3\xa9\r\n"),
    _get("a", b"Content-Length: 1\r\n"),
    _get("a", b"Host: y\r\n"),
    _get("a", b"Upgrade: websocket\r\nConnection: upgrade\r\n"),
    _get("a", b"X: " + b"v" * 9000 + b"\r\n"),
    _get(""),
    _get("\xe9"),
    b"DELETE /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\nHost: x\r\n\r\n",
])
def test_the_reader_leaves_the_rest_to_aiohttp(head: bytes) -> None:
    assert HeadReader().read(head, max_body=1 << 20) is None


def test_an_empty_value_is_read_as_empty() -> None:
    request = HeadReader().read(_get("a", b"If-Match:\r\n"), max_body=1)
    assert request is not None and request.if_match == ""  # INVALID_ARGUMENT, as via aiohttp


def test_a_body_over_the_limit_is_aiohttps() -> None:
    head = WRK_PUT.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert HeadReader().read(head, max_body=4) is None
    assert HeadReader().read(head, max_body=5) is not None


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class _Gate:
    def __init__(self) -> None:
        self.delivered_count = 0

    def delivered(self, transport: Any) -> None:
        self.delivered_count += 1


class _Aiohttp:
    """Stands in for aiohttp's RequestHandler: records what it is given."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


class _Lane:
    """Stands in for LeanLane: keeps the dispatched requests for the test to answer."""

    def __init__(self, inline: bool = False) -> None:
        self.gate = _Gate()
        self.loop = asyncio.get_running_loop()
        self.idle_timeout_s = 60.0
        self.inline = inline  # answer every request at once, with its key
        self.max_body = 1 << 20
        self.stopping = False
        self.tcp_keepalive = False
        self.connections: set[LeanConnection] = set()
        self.dispatched: list[tuple[Slot, LeanRequest, bytes]] = []
        self.aiohttp: list[_Aiohttp] = []

    def dispatch(self, connection: LeanConnection, slot: Slot, request: LeanRequest,
                 body: bytes) -> None:
        self.dispatched.append((slot, request, body))
        if self.inline:
            connection.answered(slot, request.key.encode())

    def forget(self, connection: LeanConnection) -> None:
        self.connections.discard(connection)

    def make_aiohttp_handler(self) -> _Aiohttp:
        handler = _Aiohttp()
        self.aiohttp.append(handler)
        return handler


def _connection(lane: _Lane) -> tuple[LeanConnection, _Transport]:
    connection = LeanConnection(lane)  # type: ignore[arg-type]
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


async def test_requests_are_served_one_after_the_other() -> None:
    lane = _Lane()
    connection, transport = _connection(lane)
    connection.data_received(_get("a") + WRK_PUT + _get("c"))
    assert [r.key for _, r, _ in lane.dispatched] == ["a"]
    connection.answered(lane.dispatched[0][0], b"first")
    assert [r.key for _, r, _ in lane.dispatched] == ["a", "bench:00000042"]
    assert lane.dispatched[1][2] == b"value"
    connection.answered(lane.dispatched[1][0], b"second")
    connection.answered(lane.dispatched[2][0], b"third")
    assert transport.written == [b"first", b"second", b"third"]
    assert lane.gate.delivered_count == 3


async def test_answers_ready_at_once_leave_in_one_write() -> None:
    lane = _Lane(inline=True)
    connection, transport = _connection(lane)
    connection.data_received(_get("a") + _get("b") + _get("c"))
    assert transport.written == [b"abc"]


async def test_requests_cut_anywhere_are_taken_whole() -> None:
    lane = _Lane(inline=True)
    connection, _ = _connection(lane)
    stream = WRK_PUT + _get("b")
    for i in range(len(stream)):
        connection.data_received(stream[i:i + 1])
    assert [(r.key, body) for _, r, body in lane.dispatched] == [
        ("bench:00000042", b"value"), ("b", b"")]


async def test_reading_ahead_is_bounded() -> None:
    lane = _Lane()
    connection, transport = _connection(lane)
    connection.data_received(_get("a"))
    many = _get("b") * (READ_AHEAD // len(_get("b")) + 1)
    connection.data_received(many)
    assert transport.paused and len(lane.dispatched) == 1
    connection.answered(lane.dispatched[0][0], b"A")
    assert len(lane.dispatched) == 2  # the next one, taken from what was read ahead
    assert not transport.paused  # one request fewer buffered: under the bound again


async def test_the_handover_waits_for_the_answer_owed() -> None:
    lane = _Lane()
    connection, transport = _connection(lane)
    other = b"DELETE /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n"
    connection.data_received(_get("a") + other + _get("b"))
    assert len(lane.dispatched) == 1 and not lane.aiohttp  # the DELETE waits for a's answer
    connection.data_received(b"more")
    connection.answered(lane.dispatched[0][0], b"A")
    assert transport.written == [b"A"] and not transport.paused
    handler, = lane.aiohttp
    assert handler.transport is transport
    assert handler.received == other + _get("b") + b"more"
    connection.data_received(b"later")
    assert handler.received.endswith(b"later") and len(lane.dispatched) == 1


async def test_a_close_request_is_the_last() -> None:
    lane = _Lane()
    connection, transport = _connection(lane)
    connection.data_received(_get("a", b"Connection: close\r\n"))
    assert len(lane.dispatched) == 1
    slot = lane.dispatched[0][0]
    assert slot.close
    connection.data_received(_get("b"))  # after a close: not served
    connection.answered(slot, b"A")
    assert transport.written == [b"A"] and transport.closed and len(lane.dispatched) == 1


async def test_bytes_after_a_close_request_are_aiohttps_to_refuse() -> None:
    """aiohttp answers a close request followed by more bytes in the same read with a 400
    (llhttp: data after Connection: close): the lane hands such a read over untouched."""
    lane = _Lane()
    connection, _ = _connection(lane)
    connection.data_received(_get("a", b"Connection: close\r\n") + _get("b"))
    assert not lane.dispatched
    assert lane.aiohttp[0].received == _get("a", b"Connection: close\r\n") + _get("b")

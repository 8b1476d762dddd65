"""The pipelined connection against a real WebSocket server speaking the /v1/rpc frame shape:
many requests in flight answered out of order, typed errors, reconnect after the server drops
the socket, and requests in flight failed (not hung) when it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from eventually import eventually
from shardkv.client.connection import ConnectionFailed, NodeConnection, NodePool, rpc_url
from shardkv.cluster import wire
from shardkv.cluster.errors import NotFound, Timeout
from shardkv.cluster.write_coalescing import CoalescingTransport


@dataclass
class EchoServer:
    """Answers ``echo`` after ``args["delay"]`` seconds, fails ``missing`` with NOT_FOUND,
    never answers ``hang``, and closes the socket on ``drop``. ``frozen``: never answers a
    ping either (a SIGSTOPped process whose kernel still holds the socket open)."""

    frozen: bool = False

    url: str = ""
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connections: int = 0
    received: list[str] = field(default_factory=list)  # ops, in arrival order

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=not self.frozen)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request_id: int, op: str, args: dict) -> None:
            if op == "echo":
                await asyncio.sleep(args.get("delay", 0))
                await ws.send_bytes(wire.pack([request_id, "ok", {"echo": args["value"]}]))
            elif op == "missing":
                body = NotFound("no such key", key=args["key"]).to_dict()
                await ws.send_bytes(wire.pack([request_id, "NOT_FOUND", body]))
            elif op == "drop":
                await ws.close()

        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue  # a ping the frozen server does not answer
            request_id, op, args = wire.unpack(msg.data)
            self.received.append(op)
            if op != "hang":
                task = asyncio.create_task(answer(request_id, op, args))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        return ws


@pytest.fixture
async def server() -> AsyncIterator[EchoServer]:
    echo = EchoServer()
    app = web.Application()
    app.router.add_get("/v1/rpc", echo.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    echo.url = f"http://127.0.0.1:{port}"
    yield echo
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def test_rpc_url() -> None:
    assert rpc_url("http://h:1/") == "ws://h:1/v1/rpc"
    assert rpc_url("https://h:1") == "wss://h:1/v1/rpc"


async def test_pipelined_requests_are_matched_to_their_answers(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    conn = NodeConnection(server.url, session)
    # Earlier requests take longer, so answers arrive in reverse order.
    delays = [0.05 - i * 0.005 for i in range(10)]
    results = await asyncio.gather(
        *(conn.call("echo", {"value": i, "delay": d}, 5.0) for i, d in enumerate(delays))
    )
    assert [r["echo"] for r in results] == list(range(10))
    assert server.connections == 1  # all on one socket
    assert conn.in_flight == 0
    await conn.close()


async def test_requests_sent_together_leave_in_one_write(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    """Requests sent in one loop iteration go out in one socket write (so the node reads
    them with one wakeup and orders them into one WAL group), and each still gets its own
    answer."""
    conn = NodeConnection(server.url, session)
    assert (await conn.call("echo", {"value": -1}, 5.0))["echo"] == -1  # opens the socket
    ws = conn._ws
    assert ws is not None
    coalescing = ws._writer.transport  # type: ignore[attr-defined]
    assert isinstance(coalescing, CoalescingTransport)
    socket = coalescing._transport
    writes: list[int] = []
    write = socket.write

    def counted(data: bytes) -> None:
        writes.append(len(data))
        write(data)

    socket.write = counted
    try:
        results = await asyncio.gather(*(conn.call("echo", {"value": i}, 5.0)
                                         for i in range(20)))
    finally:
        socket.write = write
    assert [r["echo"] for r in results] == list(range(20))
    assert len(writes) == 1 and server.received.count("echo") == 21
    await conn.close()


async def test_error_answers_are_typed(server: EchoServer, session: aiohttp.ClientSession) -> None:
    conn = NodeConnection(server.url, session)
    with pytest.raises(NotFound) as caught:
        await conn.call("missing", {"key": "k"}, 5.0)
    assert caught.value.details["key"] == "k"
    await conn.close()


async def test_a_dropped_socket_fails_requests_in_flight_and_reconnects(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    conn = NodeConnection(server.url, session)
    slow = asyncio.create_task(conn.call("echo", {"value": 1, "delay": 10}, 20.0))
    await eventually(lambda: "echo" in server.received, what="the server to hold the echo")
    with pytest.raises(ConnectionFailed):
        await conn.call("drop", {}, 5.0)
    with pytest.raises(ConnectionFailed) as caught:
        await slow
    assert caught.value.maybe_executed  # it had been sent: outcome unknown
    assert caught.value.retryable
    result = await conn.call("echo", {"value": 2}, 5.0)
    assert result == {"echo": 2}
    assert conn.connects == 2
    assert server.connections == 2
    await conn.close()


async def test_an_unanswered_request_times_out(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    conn = NodeConnection(server.url, session)
    with pytest.raises(Timeout) as caught:
        await conn.call("hang", {}, 0.1)
    assert caught.value.details["maybe_executed"]
    assert conn.in_flight == 0  # the abandoned future is not leaked
    assert (await conn.call("echo", {"value": 3}, 5.0)) == {"echo": 3}
    await conn.close()


async def test_each_request_times_out_at_its_own_budget(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    """Deadlines share one timer per connection (client/request_deadlines.py): a shorter
    budget sent after a longer one still ends first, and answered requests in between are
    not touched."""
    conn = NodeConnection(server.url, session)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended: dict[str, float] = {}

    async def timed(name: str, op: str, budget: float) -> None:
        with pytest.raises(Timeout):
            await conn.call(op, {}, budget)
        ended[name] = loop.time() - started

    long = asyncio.ensure_future(timed("long", "hang", 0.6))
    await asyncio.sleep(0.02)
    assert (await conn.call("echo", {"value": 1}, 5.0)) == {"echo": 1}
    await asyncio.gather(long, timed("short", "hang", 0.15))
    assert ended["short"] < ended["long"]
    assert 0.15 <= ended["short"] < 0.5
    assert 0.6 <= ended["long"] < 1.5
    assert conn.in_flight == 0
    await conn.close()


async def test_a_cancelled_call_leaves_nothing_pending(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    """The answer's wait is a bare timer, not ``asyncio.timeout``: cancelling the caller must
    still drop its future, and the connection must go on serving."""
    conn = NodeConnection(server.url, session)
    call = asyncio.ensure_future(conn.call("hang", {}, 30.0))
    deadline = asyncio.get_running_loop().time() + 5.0
    while conn.in_flight == 0:
        assert asyncio.get_running_loop().time() < deadline, "the request was never sent"
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert conn.in_flight == 0
    assert (await conn.call("echo", {"value": 4}, 5.0)) == {"echo": 4}
    await conn.close()


async def test_connecting_to_nothing_fails_fast_and_was_not_executed(
    session: aiohttp.ClientSession,
) -> None:
    from shardkv.cluster.local_processes import free_port

    port = free_port()
    conn = NodeConnection(f"http://127.0.0.1:{port}", session)
    with pytest.raises(ConnectionFailed) as caught:
        await conn.call("echo", {"value": 1}, 2.0)
    assert not caught.value.maybe_executed
    await conn.close()


async def test_a_pool_spreads_requests_over_its_connections(
    server: EchoServer, session: aiohttp.ClientSession
) -> None:
    pool = NodePool(server.url, session, size=3)
    results = await asyncio.gather(*(pool.call("echo", {"value": i}, 5.0) for i in range(9)))
    assert [r["echo"] for r in results] == list(range(9))
    assert server.connections == 3
    await pool.close()
    with pytest.raises(ValueError):
        NodePool(server.url, session, size=0)


async def test_a_frozen_node_is_found_by_the_heartbeat(
    server: EchoServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shardkv.client.connection.HEARTBEAT_S", 0.2)
    server.frozen = True
    conn = NodeConnection(server.url, session)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionFailed) as caught:
        await conn.call("hang", {}, 30.0)
    # One heartbeat of silence, half of one for the pong, a little scheduling slack: far
    # from the 30 s the caller allowed.
    assert loop.time() - started < 5.0
    assert caught.value.maybe_executed
    assert conn.in_flight == 0
    await conn.close()


async def test_a_quiet_but_live_node_keeps_its_connection(
    server: EchoServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shardkv.client.connection.HEARTBEAT_S", 0.2)
    conn = NodeConnection(server.url, session)
    # Silent for several heartbeats while the node works on a slow request: pongs keep it.
    assert await conn.call("echo", {"value": 1, "delay": 1.0}, 5.0) == {"echo": 1}
    assert conn.connects == 1
    await conn.close()

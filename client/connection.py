"""One pipelined ``/v1/rpc`` WebSocket per node (or a small pool of them).

Every request is a frame ``[id, op, args]`` and gets a future keyed by ``id``; one reader task
resolves futures as answers arrive, in any order. So a single connection carries many requests
in flight, which is what makes a Python client fast: no per-request handshake, no head-of-line
wait for the previous answer.

Failure model. A connection that breaks fails every request in flight with
``ConnectionFailed``; the next call reconnects. A node that stops answering without closing
the socket (SIGSTOP, a VM or GC pause, a half-open connection) is found by the WebSocket
heartbeat: after ``HEARTBEAT_S`` of silence the client pings, and no pong within half of that
counts as a broken connection. Without it a request to a frozen primary would wait out the
caller's whole deadline even after the shard had failed over. The error says whether the
request could have reached the node (``maybe_executed``): a frame that was never written is
safe to send again anywhere, while one that was written may have been applied, which only
idempotent operations may ignore (see ``client.executor``).

Batching. The client offers ``cluster/rpc_batches.py``'s subprotocol; if the node selects it,
the requests of one loop iteration leave as one message (``request_batches.py``) and the
node's answers arrive in batches too. An old node selects nothing and gets one frame per
message, as before.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Collection
from typing import Any

import aiohttp
from shardkv.client.request_batches import RequestBatches
from shardkv.client.request_deadlines import RequestDeadlines
from shardkv.cluster import rpc_batches, wire
from shardkv.cluster.errors import Timeout, Unavailable, error_from_dict
from shardkv.cluster.limits import MAX_FRAME_BYTES
from shardkv.cluster.write_coalescing import coalesce_writes

log = logging.getLogger(__name__)

# Seconds of silence before a ping; no pong within half of it breaks the connection. Long
# enough that a node busy for a second (a large fsync group, a snapshot) is not cut off.
HEARTBEAT_S = 3.0


# What ends ``async for msg in ws`` (aiohttp's ``__anext__``), and so our read loop.
_END_OF_STREAM = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED})


class ConnectionFailed(Unavailable):
    """The node could not be reached or the connection broke. ``maybe_executed`` is True when
    the request had been written before the break (its outcome is unknown)."""

    def __init__(self, message: str = "", *, maybe_executed: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.maybe_executed = maybe_executed


def rpc_url(node_url: str) -> str:
    """``http://host:port`` -> ``ws://host:port/v1/rpc`` (https -> wss)."""
    base = node_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v1/rpc"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v1/rpc"
    return base + "/v1/rpc"


class NodeConnection:
    """A single WebSocket to one node, opened lazily and reopened after a failure."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._connect_timeout = connect_timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._batches: RequestBatches | None = None  # when the node agreed to batching
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()
        self._closed = False
        # Bound to the loop of the first connect (a connection lives on one loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: RequestDeadlines | None = None
        # A frame encoder of this connection's own: msgpack's ``packb`` builds a ``Packer``
        # per call, a third of an encode for a put's small frame (not thread-safe: used on
        # the connection's loop only).
        self._pack = wire.packer()
        self.connects = 0  # how many times a socket was opened (observability, tests)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _ensure_open(self) -> aiohttp.ClientWebSocketResponse:
        ws = self._ws
        if ws is not None and not ws.closed:
            return ws
        async with self._connect_lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self._closed:
                raise ConnectionFailed(f"connection to {self.url} is closed", node=self.url)
            try:
                ws = await self._session.ws_connect(
                    rpc_url(self.url),
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
                    max_msg_size=MAX_FRAME_BYTES,
                    autoping=True,
                    heartbeat=HEARTBEAT_S,
                    compress=0,
                    protocols=rpc_batches.protocols(),
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ConnectionFailed(
                    f"cannot connect to {self.url}: {exc or type(exc).__name__}", node=self.url
                ) from exc
            if self._deadlines is None:
                self._loop = asyncio.get_running_loop()
                self._deadlines = RequestDeadlines(self._loop, self._expire)
            # Requests sent in one loop iteration leave in one write: fewer syscalls here,
            # fewer wakeups at the node, and they share its WAL group. A batching connection
            # does that itself, in one message; otherwise write_coalescing.py joins messages.
            batches = None
            if ws.protocol == rpc_batches.SUBPROTOCOL:
                batches = RequestBatches(ws, asyncio.get_running_loop(), self._fail_unsent)
            else:
                coalesce_writes(ws)
            self._ws, self._batches = ws, batches
            self.connects += 1
            self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws, batches))
            return ws

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse,
                         batches: RequestBatches | None) -> None:
        reason = "closed by the node"
        dispatch = self._dispatch if batches is None else self._dispatch_batch
        # ``receive`` itself rather than ``async for``: the iterator's ``__anext__`` is one
        # more coroutine per answer, and it stops at the same three message types.
        receive, binary, error = ws.receive, aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.ERROR
        try:
            while True:
                msg = await receive()
                kind = msg.type
                if kind is binary:
                    dispatch(msg.data)
                elif kind is error:
                    reason = f"error: {ws.exception()}"
                    break
                elif kind in _END_OF_STREAM:
                    break
        except Exception as exc:  # the socket died under us: fail what is in flight
            reason = f"error: {exc!r}"
        finally:
            if self._ws is ws:
                self._ws = None
            self._fail_pending(reason, batches.close() if batches is not None else ())

    def _dispatch(self, data: bytes) -> None:
        try:
            request_id, status, result = wire.unpack(data)
        except (ValueError, TypeError) as exc:
            log.warning("undecodable rpc answer from %s: %r", self.url, exc)
            return
        self._resolve(request_id, status, result)

    def _dispatch_batch(self, data: bytes) -> None:
        try:
            answers = wire.unpack(data)
            if not isinstance(answers, list):
                raise TypeError("a batch of answers must be an array")
        except (ValueError, TypeError) as exc:
            log.warning("undecodable rpc answers from %s: %r", self.url, exc)
            return
        resolve = self._resolve
        for answer in answers:
            if isinstance(answer, list) and len(answer) == 3:
                resolve(*answer)
            else:
                log.warning("malformed rpc answer from %s: %r", self.url, answer)

    def _resolve(self, request_id: Any, status: Any, result: Any) -> None:
        future = self._pending.pop(request_id, None) if request_id is not None else None
        if future is None or future.done():
            if request_id is None and isinstance(result, dict):
                log.warning("node %s rejected a frame: %s", self.url, result.get("message"))
            return
        if status == "ok":
            future.set_result(result)
        else:
            body = result if isinstance(result, dict) else {"error": status}
            body.setdefault("error", status)
            future.set_exception(error_from_dict(body))

    def abandon_pending(self, reason: str) -> int:
        """Fail every request in flight (their outcome unknown) but keep the socket: the
        caller knows none of them can succeed here (this node was deposed), so they should
        go elsewhere now rather than wait for an answer that will never be a success.
        Returns how many were abandoned."""
        count = len(self._pending)
        self._fail_pending(reason)
        return count

    def _fail_pending(self, reason: str, unsent: Collection[int] = ()) -> None:
        """Fail every request in flight: those in ``unsent`` were never written (a batch not
        yet sent when the connection broke), the others may have been executed."""
        pending, self._pending = self._pending, {}
        for request_id, future in pending.items():
            if not future.done():
                sent = request_id not in unsent
                future.set_exception(
                    ConnectionFailed(
                        f"connection to {self.url} lost ({reason})"
                        + ("" if sent else " before the request was sent"),
                        maybe_executed=sent,
                        node=self.url,
                    )
                )

    def _fail_unsent(self, ids: list[int], exc: BaseException) -> None:
        """A batch could not be sent: its requests fail as never sent."""
        pending = self._pending
        for request_id in ids:
            future = pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(ConnectionFailed(
                    f"cannot send to {self.url}: {exc}", node=self.url, maybe_executed=False))

    async def call(self, op: str, args: dict[str, Any], budget: float) -> Any:
        """Send one request and wait for its answer, at most ``budget`` seconds in total
        (connecting included). Error answers are raised as their typed exception."""
        ws = self._ws
        if ws is None or ws.closed:  # the fast path (an open socket) needs no timer
            ws = await self._open_within(budget)
        loop, deadlines = self._loop, self._deadlines
        assert loop is not None and deadlines is not None  # set by the first connect
        request_id = next(self._ids)
        future: asyncio.Future[Any] = loop.create_future()
        pending = self._pending
        batches = self._batches
        if batches is not None and self._ws is ws:
            frame = self._pack([request_id, op, args])
            pending[request_id] = future
            batches.add(request_id, frame)  # a failed send fails the future
        else:
            pending[request_id] = future
            try:
                await ws.send_bytes(self._pack([request_id, op, args]))
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                pending.pop(request_id, None)
                raise ConnectionFailed(
                    f"cannot send to {self.url}: {exc}", node=self.url, maybe_executed=False
                ) from exc
        # The answer's wait is bounded by the connection's deadline queue, which fails the
        # future at ``budget`` as a timer of its own would (``request_deadlines.py``); not
        # ``asyncio.timeout``, whose cancel-and-uncancel bookkeeping cost as much as the rest
        # of the call, nor a ``call_at`` per request.
        own_timer = deadlines.add(future, op, budget)
        try:
            return await future
        finally:
            if own_timer is not None:
                own_timer.cancel()
            self._pending.pop(request_id, None)
            deadlines.trim()

    def _expire(self, future: asyncio.Future[Any], op: str, budget: float) -> None:
        if not future.done():
            future.set_exception(Timeout(
                f"{op} on {self.url} took over {budget:.3f}s (outcome unknown)",
                node=self.url,
                maybe_executed=True,
            ))

    async def _open_within(self, budget: float) -> aiohttp.ClientWebSocketResponse:
        connect_budget = min(budget, self._connect_timeout)
        try:
            async with asyncio.timeout(connect_budget):
                return await self._ensure_open()
        except TimeoutError:
            raise ConnectionFailed(
                f"connecting to {self.url} took over {connect_budget:.3f}s", node=self.url
            ) from None

    async def close(self) -> None:
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_pending("client closed")
        if self._deadlines is not None:
            self._deadlines.close()


class NodePool:
    """``size`` connections to one node, used round-robin. One is usually enough (requests
    are pipelined); more spread the encoding work of a busy node over several sockets."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        size: int = 1,
        connect_timeout: float = 2.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.url = url.rstrip("/")
        self.connections = [
            NodeConnection(url, session, connect_timeout=connect_timeout) for _ in range(size)
        ]
        self._next = itertools.cycle(range(size))

    def connection(self) -> NodeConnection:
        """The connection the next request goes on (round-robin)."""
        connections = self.connections
        return connections[0] if len(connections) == 1 else connections[next(self._next)]

    async def call(self, op: str, args: dict[str, Any], budget: float) -> Any:
        return await self.connection().call(op, args, budget)

    def abandon_pending(self, reason: str) -> int:
        """``NodeConnection.abandon_pending`` on every connection of the pool."""
        return sum(c.abandon_pending(reason) for c in self.connections)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)

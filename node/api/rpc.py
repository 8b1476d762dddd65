"""``/v1/rpc``: the client library's fast path, binary msgpack frames over one WebSocket.

A request frame is ``[id, op, args]``; its answer ``[id, status, result]``. Each request runs
as its own task, so one connection carries many requests in flight and answers come back in
completion order (a slow write never holds up the reads behind it, and concurrent writes
meet in the WAL's group commit). The number in flight per connection is bounded: once the
bound is reached the node stops reading that socket, and TCP backpressure slows the client
instead of the node queueing without limit.

Every frame gets an answer, even one that cannot be decoded: ``[null, "INVALID_ARGUMENT",
...]`` (or the id, when it can be recovered), and the connection stays usable. Only a frame
far beyond the protocol's 32 MiB limit makes aiohttp close the socket (1009), since reading
it would mean buffering it.

A client that negotiated ``cluster/rpc_batches.py``'s subprotocol sends batch messages (an
array of such frames) and gets batch messages back (``rpc_answers.py``); each frame inside is
served exactly as a frame of its own. A batch that cannot be walked is answered with one
``[null, "INVALID_ARGUMENT", ...]`` and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from aiohttp import WSCloseCode, WSMsgType, web
from shardkv.cluster import rpc_batches
from shardkv.cluster.errors import InvalidArgument, ShardKVError, TooLarge, Unavailable
from shardkv.cluster.limits import MAX_FRAME_BYTES
from shardkv.cluster.wire import pack, unpack
from shardkv.cluster.write_coalescing import coalesce_writes
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.operations import Operation, client_error, execute, lookup
from shardkv.node.api.rpc_answers import AnswerBatches
from shardkv.node.metrics import NodeMetrics

logger = logging.getLogger("shardkv.node.rpc")

# aiohttp refuses (and closes on) frames over max_msg_size; allow some slack above the
# protocol limit so that a frame just over it is answered TOO_LARGE on a live connection.
FRAME_READ_LIMIT = MAX_FRAME_BYTES + (4 << 20)
_MAX_ID = 2**63


def _frame_id(data: bytes) -> int | None:
    """Best effort: the id of a frame too large or too broken to decode whole, read from its
    first bytes, so the client can match the error to its request."""
    try:
        unpacker = msgpack.Unpacker(max_buffer_size=64, raw=False, max_bin_len=0,
                                    max_str_len=0, max_ext_len=0)
        unpacker.feed(data[:64])
        if unpacker.read_array_header() < 1:
            return None
        request_id = unpacker.unpack()
    except Exception:
        return None
    return request_id if _valid_id(request_id) else None


def _valid_id(request_id: object) -> bool:
    return isinstance(request_id, int) and not isinstance(request_id, bool) and (
        -_MAX_ID <= request_id < _MAX_ID)


def _checked(frame: object) -> tuple[int, object, Any]:
    """A decoded frame's ``(id, op, args)``, or ``InvalidArgument`` saying what is wrong."""
    if not isinstance(frame, list) or len(frame) != 3:
        raise InvalidArgument("a frame must be a 3-element array [id, op, args]")
    request_id, op, args = frame
    if not _valid_id(request_id):
        raise InvalidArgument("request id must be a 64-bit integer")
    return request_id, op, args


def _item_id(frame: object) -> int | None:
    """The id of a decoded but malformed frame of a batch, if it has a valid one."""
    if isinstance(frame, list) and frame and _valid_id(frame[0]):
        return frame[0]  # type: ignore[no-any-return]
    return None


def _error_frame(request_id: int | None, error: ShardKVError) -> bytes:
    return pack([request_id, error.code.value, error.to_dict()])


class RpcConnection:
    """One ``/v1/rpc`` WebSocket: reads frames, runs each as a task, writes answers."""

    def __init__(self, ws: web.WebSocketResponse, ctx: NodeContext, metrics: NodeMetrics,
                 max_inflight: int) -> None:
        self.ws = ws
        # Told of every message read (the node's ConnectionGate: its bytes are now delivered).
        self.on_message: Callable[[], None] | None = None
        # Batching (negotiated in the handshake) answers an iteration's requests in one
        # message; otherwise each answer is a message, an iteration's joined in one write.
        self.batched = ws.ws_protocol == rpc_batches.SUBPROTOCOL
        self._answers = AnswerBatches(ws) if self.batched else None
        # How an answer frame leaves: queued in this iteration's batch, or its own message.
        self._send: Callable[[bytes], Awaitable[None]] = (
            self._answers.send if self._answers is not None else self._send_message)
        self._output = None if self.batched else coalesce_writes(ws)  # write_coalescing.py
        self.ctx = ctx
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_inflight)
        # Bound once: looking the running loop up is a ``getpid()`` system call per request
        # on Python 3.11 (node/wal/wakeup.py).
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    @property
    def inflight(self) -> int:
        """Requests of this connection being served now."""
        return len(self._tasks)

    async def serve(self) -> None:
        """Read until the peer closes (or the node drains this connection)."""
        ws = self.ws
        async for msg in ws:
            if self.on_message is not None:
                self.on_message()
            if msg.type is WSMsgType.BINARY:
                if self.batched:
                    await self._dispatch_batch(msg.data)
                else:
                    await self._slots.acquire()
                    self._dispatch(msg.data)
            elif msg.type is WSMsgType.TEXT:
                self.metrics.bad_frames.inc()
                await self._send(_error_frame(None, InvalidArgument(
                    "text frames are not accepted: send binary msgpack [id, op, args]")))
            elif msg.type is WSMsgType.ERROR:
                logger.debug("rpc connection error: %s", ws.exception())
                break
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._flush()

    def _flush(self) -> None:
        if self._answers is not None:
            self._answers.flush()
        if self._output is not None:
            self._output.flush()

    async def _dispatch_batch(self, data: bytes) -> None:
        """Each frame of a batch message, dispatched as if it had come alone (an in-flight
        slot each). A batch over the frame limit is walked frame by frame, undecoded, so that
        a frame too large is refused on its own."""
        acquire = self._slots.acquire
        oversized = len(data) > MAX_FRAME_BYTES
        try:
            frames = rpc_batches.split(data) if oversized else rpc_batches.decode(data)
        except ShardKVError as error:
            self.metrics.bad_frames.inc()
            await self._send(_error_frame(None, error))
            return
        if oversized:
            for raw in frames:
                await acquire()
                self._dispatch(raw)
            return
        for frame in frames:
            await acquire()
            try:
                request_id, op, args = _checked(frame)
            except ShardKVError as error:
                self.metrics.bad_frames.inc()
                self._start(self._answer_now(_item_id(frame), error))
                continue
            self._dispatch_frame(request_id, op, args)

    def _dispatch(self, data: bytes) -> None:
        try:
            request_id, op, args = self._decode(data)
        except ShardKVError as error:
            self.metrics.bad_frames.inc()
            self._start(self._answer_now(_frame_id(data), error))
            return
        self._dispatch_frame(request_id, op, args)

    def _dispatch_frame(self, request_id: int, op: object, args: Any) -> None:
        try:
            operation = lookup(op)
        except ShardKVError as error:
            self.metrics.observe("unknown", error.code.value, 0.0)
            self._start(self._answer_now(request_id, error))
            return
        if self._draining:
            self._start(self._answer_now(request_id, Unavailable(
                "the node is shutting down; retry on another connection")))
            return
        self._start(self._run(request_id, operation, args))

    def _start(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    @staticmethod
    def _decode(data: bytes) -> tuple[int, object, Any]:
        if len(data) > MAX_FRAME_BYTES:
            raise TooLarge(f"frame is {len(data)} bytes; the limit is {MAX_FRAME_BYTES}")
        try:
            frame = unpack(data)
        except Exception:
            raise InvalidArgument("frame is not valid msgpack") from None
        return _checked(frame)

    async def _answer_now(self, request_id: int | None, error: ShardKVError) -> None:
        await self._send(_error_frame(request_id, error))

    async def _run(self, request_id: int, operation: Operation, args: Any) -> None:
        metrics = self.metrics
        started = time.perf_counter()
        try:
            result = await execute(self.ctx, operation, args)
            frame = pack([request_id, "ok", result])
            outcome = "ok"
        except Exception as exc:
            error = client_error(exc, logger)
            frame = _error_frame(request_id, error)
            outcome = error.code.value
        metrics.observe(operation.name, outcome, time.perf_counter() - started)
        await self._send(frame)

    async def _send_message(self, frame: bytes) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            pass  # the peer went away; its requests' outcomes are unknown to it

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: refuse new requests, let those in flight finish (bounded by
        ``grace_s``), then close with 1001 (going away) so the client reconnects elsewhere."""
        self._draining = True
        pending = set(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        self._flush()  # what is gathered leaves before the close frame
        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")

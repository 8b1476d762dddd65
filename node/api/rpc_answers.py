"""The answers of one batching ``/v1/rpc`` connection: those ready in one loop iteration
leave as one message (``cluster/rpc_batches.py``).

Answers are gathered until the loop iteration ends, joined into one batch and written as one
unmasked binary WebSocket frame whose header is built here (two to ten bytes, RFC 6455 5.2):
aiohttp's per-message writer costs each answer a coroutine, a header and a write, and for one
joined message per iteration it would only add a coroutine. aiohttp's own frames (pongs, the
close frame) still go through its writer, whole, on the same transport.

Backpressure is kept as aiohttp's writer keeps it: an answer is queued, and while the
transport is paused (the client is not reading), the request that produced it waits for the
transport to drain before it gives back its in-flight slot, so a connection whose client
stops reading soon stops being read. A closed connection drops what is queued: its client
no longer waits for it.

This reaches into aiohttp (the writer's ``transport`` and ``protocol``, whose
``_drain_helper`` its own writer awaits), as ``cluster/write_coalescing.py`` does. An aiohttp
laid out otherwise makes ``AnswerBatches`` refuse to start, and every batching test in
tests/integration/test_rpc_batches.py fail, rather than answers go out unframed.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiohttp import web
from shardkv.cluster import rpc_batches

_BINARY_FIN = 0x82
_LEN2 = struct.Struct("!BBH").pack
_LEN8 = struct.Struct("!BBQ").pack
_COPY_LIMIT = 1 << 16


def frame_header(length: int) -> bytes:
    """The header of one final, unmasked binary frame of ``length`` bytes."""
    if length < 126:
        return bytes((_BINARY_FIN, length))
    if length < 0x10000:
        return _LEN2(_BINARY_FIN, 126, length)
    return _LEN8(_BINARY_FIN, 127, length)


class AnswerBatches:
    """Queues answer frames and writes each loop iteration's as one batch message."""

    __slots__ = ("_count", "_frames", "_loop", "_protocol", "_scheduled", "_size",
                 "_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        writer: Any = getattr(ws, "_writer", None)
        transport: Any = getattr(writer, "transport", None)
        protocol: Any = getattr(writer, "protocol", None)
        if transport is None or not hasattr(protocol, "writing_paused"):
            raise RuntimeError("aiohttp's WebSocket writer is not laid out as expected")
        self._ws = ws
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._frames: list[bytes] = []
        self._count = 0
        self._size = 0
        self._scheduled = False

    async def send(self, frame: bytes) -> None:
        """Queue one answer frame; returns once the transport can take more."""
        if self._ws.closed:
            return
        if rpc_batches.is_full(self._count, self._size, len(frame)):
            self.flush()
        self._frames.append(frame)
        self._count += 1
        self._size += len(frame)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
        protocol = self._protocol
        if protocol.writing_paused:
            try:
                await protocol._drain_helper()
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; its requests' outcomes are unknown to it

    def flush(self) -> None:
        """Write what is queued as one message (at once: before a close, on drain)."""
        self._scheduled = False
        if not self._count:
            return
        frames, self._frames = self._frames, []
        self._count = self._size = 0
        transport = self._transport
        if self._ws.closed or transport.is_closing():
            return
        body = rpc_batches.join(frames)
        if len(body) > _COPY_LIMIT:  # a large body is not copied to prepend the header
            transport.write(frame_header(len(body)))
            transport.write(body)
        else:
            transport.write(frame_header(len(body)) + body)

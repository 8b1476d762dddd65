"""One ``send`` per event-loop iteration for a WebSocket that carries many small frames.

Both ends of ``/v1/rpc`` pipeline many small frames on one socket: the client's requests, the
node's answers. Written one by one, each frame costs a ``send`` syscall, and on loopback the
sender's syscall also runs the receiver's TCP path; under load that is as much as serving the
request. Buffered until the loop iteration ends, a burst leaves in one syscall and often one
segment, and the other side reads it with one wakeup. On the client this also shapes the
node's work: requests that arrive together are ordered together and share one WAL group
commit (one fsync, one replication frame) instead of trickling into several.

Shared by the node and the client, which may not import each other: it lives on the floor.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Gathers what is written to a socket during one event-loop iteration into one write.
    A close frame is written through at once, since aiohttp may close the transport right
    after it."""

    __slots__ = ("_chunks", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._chunks.append(bytes(data))
        if data[:1] == b"\x88":  # FIN + close opcode: flush now
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._chunks:
            return
        chunks, self._chunks = self._chunks, []
        if not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalesce_writes(ws: Any) -> CoalescingTransport | None:
    """Put a ``CoalescingTransport`` under a WebSocket's frame writer (a server's
    ``web.WebSocketResponse`` or a client's ``ClientWebSocketResponse``). This reaches into
    aiohttp (``_writer.transport``); if a future aiohttp lays it out differently, frames are
    simply written one by one, as before (None is returned)."""
    writer = getattr(ws, "_writer", None)
    transport = getattr(writer, "transport", None)
    # Duck-typed: uvloop's transports do not subclass asyncio.Transport.
    if writer is None or not callable(getattr(transport, "write", None)) \
            or not callable(getattr(transport, "is_closing", None)):
        return None
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    writer.transport = coalescing
    return coalescing

"""The requests of one loop iteration on one connection, sent as one batch message.

Used once the node agreed to batching (``cluster/rpc_batches.py``). The first request of an
iteration starts a batch and a task to send it; the task's first step runs after every other
callback of the iteration, so the requests issued meanwhile ride along: one frame to build and
mask instead of one per request, and one message for the node to read. A batch that reaches
the size or count bound is sealed and the next request starts another, sent after it, so
requests leave in the order they were made.

Failures are exact. A batch whose send fails fails exactly its own requests, as never sent
(``maybe_executed=False``); once the connection is found broken (``close``) batches not yet
sent are never sent, so the connection's owner may report them as never sent too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import aiohttp
from shardkv.cluster import rpc_batches

# Called with the ids of a batch that could not be sent and why.
OnUnsent = Callable[[list[int], BaseException], None]


class RequestBatches:
    """The batches of one WebSocket, each sent by a task of its own."""

    __slots__ = ("_closed", "_frames", "_ids", "_loop", "_on_unsent", "_size", "_tasks",
                 "_unsent", "_ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, loop: asyncio.AbstractEventLoop,
                 on_unsent: OnUnsent) -> None:
        self._ws = ws
        self._loop = loop
        self._on_unsent = on_unsent
        self._frames: list[bytes] | None = None  # the open batch, if any
        self._ids: list[int] = []
        self._size = 0
        self._unsent: deque[list[int]] = deque()  # ids of batches not yet written, in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def unsent(self) -> int:
        """Requests queued and not yet written to the socket."""
        return sum(len(ids) for ids in self._unsent)

    def add(self, request_id: int, frame: bytes) -> None:
        """Queue one packed request frame; it leaves when this loop iteration ends."""
        frames = self._frames
        if frames is None or rpc_batches.is_full(len(frames), self._size, len(frame)):
            frames = []
            ids: list[int] = []
            self._frames, self._ids = frames, ids
            self._size = 0
            self._unsent.append(ids)
            task = self._loop.create_task(self._send(frames, ids))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        frames.append(frame)
        self._ids.append(request_id)
        self._size += len(frame)

    async def _send(self, frames: list[bytes], ids: list[int]) -> None:
        if self._frames is frames:
            self._frames = None  # sealed: later requests start the next batch
        self._unsent.popleft()
        if self._closed:
            self._on_unsent(ids, ConnectionError("the connection broke before the send"))
            return
        try:
            await self._ws.send_bytes(rpc_batches.join(frames))
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            self._on_unsent(ids, exc)

    def close(self) -> set[int]:
        """Send nothing more; returns the ids of the requests that were never sent."""
        self._closed = True
        return {request_id for ids in self._unsent for request_id in ids}

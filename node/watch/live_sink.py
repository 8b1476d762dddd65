"""A caught-up watch's events written to its socket by the hub, without waking its session.

With a thousand watches of one prefix, each applied entry used to wake a thousand session
tasks, each of which took one batch from its buffer, checked its state, sent one frame and
went back to sleep: a task switch, a timer and a loop turn per watch per entry, most of the
node's CPU at fan-out. A session whose watch has nothing buffered or held and whose socket
is keeping up now parks a :class:`LiveSink` on its subscriber while it sleeps
(``watch_session.py``); the hub's ``accept`` calls it with the entry's batch, and the sink
writes the batch's shared WebSocket message (``event_frames.wire_frame``, the same bytes
object for every watch of the group) straight to the connection's transport.

The sink declines, and the batch goes to the subscriber's buffer and wakes the session as
before, whenever the session's own checks could matter: the node is not the shard's primary
or follows a commit limit (a replica sends nothing above it), the connection is closing, or
more than ``MAX_BUFFERED`` bytes are already waiting in the transport (the client is not
reading: the bounded buffer and ``SLOW_CONSUMER`` then apply). Only strong watches, which
only a primary serves, use it; eventual ones keep their staleness checks per frame. The
node's watch sockets are uncompressed (``server.py``) and every aiohttp write of a frame is
one synchronous ``transport.write``, so a message written here never splits another.

Order and exactly once: the session parks the sink only when it has sent everything it
took, so a batch the sink writes follows every frame before it; the subscriber calls the
sink only with an empty buffer, and once one batch is buffered every later one is too, until
the session has drained them. ``sent`` is the version of the last batch the sink wrote: the
session reports progress only up to versions whose events are all written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from shardkv.node.api.node_context import NodeContext
from shardkv.node.watch.event_frames import Batch, wire_frame
from shardkv.node.watch.watch_hub import WatchHub

logger = logging.getLogger("shardkv.node.watch")

# Bytes a watch's transport may hold before the sink leaves frames to the session, which then
# waits for the socket with its send timeout (aiohttp's own high-water mark is 64 KiB too).
MAX_BUFFERED = 1 << 16


class LiveSink:
    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport,
                 ctx: NodeContext, hub: WatchHub,
                 shard: str, ring: Callable[[], int | None], *,
                 as_json: bool, sent: int) -> None:
        self._ws = ws
        self._transport = transport
        self._ctx = ctx
        self._hub = hub
        self._shard = shard
        self._ring = ring
        self._json = as_json
        self.sent = sent
        self.events_sent = 0

    def __call__(self, batch: Batch) -> bool:
        """Write ``batch`` now (True), or leave it to the session (False). Never raises:
        the hub calls it while publishing an entry to every watch."""
        transport = self._transport
        ctx = self._ctx
        if (self._hub.commit_limit is not None or ctx.role != "primary" or self._ws.closed
                or ctx.store is None or ctx.store.watch_hub is not self._hub):
            return False
        try:
            if transport.is_closing() or transport.get_write_buffer_size() > MAX_BUFFERED:
                return False
            transport.write(wire_frame(self._shard, self._ring(), batch, as_json=self._json))
        except Exception:  # the session finds out on its own send, and ends
            logger.debug("a direct watch write failed; left to the session", exc_info=True)
            return False
        self.sent = batch.version
        self.events_sent += len(batch.events)
        return True

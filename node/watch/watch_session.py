"""One ``GET /v1/watch`` WebSocket: the request, the history from the WAL, then live events.

The client's first frame is the request (``watch_request.py``): binary msgpack, or a JSON
text frame (a browser), and every frame the node sends back is in the same format. Frames:

- ``{"type": "created", "shard", "version", "start_version", "compact_version"}``: the
  watch exists; history runs from ``start_version`` (exclusive) to ``version``.
- ``{"type": "events", "shard", "version", "ring_version", "events": [...]}``: whole
  entries, in LSN order (an entry's events are never split across frames, so ``version``
  is a safe resume point); ``ring_version``: the ring this node knows (None: no cluster).
- ``{"type": "progress", "shard", "version"}``: every write of this shard up to ``version``
  that the watch matches has been sent (sent once history is done, then at the interval).
- ``{"type": "error", "error", "message", "retryable", ...}``, then the node closes:
  ``INVALID_ARGUMENT``, ``COMPACTED`` (``compact_version``), ``SLOW_CONSUMER``,
  ``NOT_PRIMARY``, ``UNAVAILABLE``.

History and live meet at the LSN the hub last published when the watch subscribed (see
``watch_hub.py``), so nothing is sent twice or skipped.

The primary serves every watch (what it has applied is committed by the shard's majority).
With ``?consistency=eventual`` (and ``max_staleness_ms``) a replica serves it too, under the
rules of an eventual read (``ctx.read_guard``): while it is within the bound of its primary,
checked at every turn of the loop, else ``TOO_STALE`` and the client resumes elsewhere. A
replica sends nothing above its hub's ``commit_limit`` (what the primary said a majority
holds), so it never reports a write a failover could still drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import WSMsgType, web
from shardkv.cluster.errors import (
    Compacted,
    InvalidArgument,
    NotPrimary,
    ShardKVError,
    SlowConsumer,
    TooStale,
    Unavailable,
)
from shardkv.cluster.wire import pack, to_json, unpack
from shardkv.node.api.node_context import NodeContext
from shardkv.node.storage.store import Store
from shardkv.node.wal.model import LsnCompacted
from shardkv.node.wal.record import WalEntry
from shardkv.node.watch.event_frames import Batch, events_frame
from shardkv.node.watch.live_sink import LiveSink
from shardkv.node.watch.subscriber import Subscriber
from shardkv.node.watch.watch_filter import entry_events, events_size
from shardkv.node.watch.watch_request import WatchRequest

logger = logging.getLogger("shardkv.node.watch")

REQUEST_TIMEOUT_S = 10.0
HISTORY_CHUNK = 512           # entries read from the log per thread hop
FRAME_EVENTS = 512            # events per frame at most (whole entries, so may be exceeded)
FRAME_BYTES = 1 << 20
MIN_STALENESS_CHECK_S = 0.02   # a bounded eventual watch re-checks its staleness this often,
MAX_STALENESS_CHECK_S = 0.25   # a quarter of the bound within these limits


class WatchSession:
    def __init__(self, ws: web.WebSocketResponse, ctx: NodeContext, shard: Callable[[], str],
                 *, max_events: int, max_bytes: int, send_timeout_s: float,
                 query: Mapping[str, str] | None = None,
                 transport: asyncio.Transport | None = None) -> None:
        self.ws = ws
        # The connection's transport: a caught-up strong watch's frames are written to it
        # from the hub (live_sink.py). None: every frame goes through the session.
        self._transport = transport
        self._query = query
        self.ctx = ctx
        self._shard = shard
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.send_timeout_s = send_timeout_s
        self.json = False
        self._events_sent = 0
        self._sink: LiveSink | None = None
        self.slow_consumer = False
        self._subscriber: Subscriber | None = None
        self._eventual = False
        self._retired = False  # ``?retired=true``: a member without a role may serve it
        self._bound: float | None = None
        self._check_s = float("inf")  # how often the live loop re-checks the role rules

    @property
    def events_sent(self) -> int:
        """Events this watch sent, by the session or by its sink."""
        return self._events_sent + (self._sink.events_sent if self._sink else 0)

    async def serve(self) -> None:
        try:
            request = WatchRequest.parse(await self._read_request(), self._query)
            self._eventual, self._bound = request.eventual, request.max_staleness_ms
            self._retired = request.retired
            if self._bound is not None:
                self._check_s = min(MAX_STALENESS_CHECK_S,
                                    max(MIN_STALENESS_CHECK_S, self._bound / 4000))
            await self._run(request, self._serving_store())
        except ShardKVError as error:
            self.slow_consumer = isinstance(error, SlowConsumer)
            await self._send({"type": "error", **error.to_dict()})
        except (TimeoutError, ConnectionError, RuntimeError):
            pass  # the peer stopped reading or went away; it resumes from its last version
        finally:
            self._unsubscribe()

    # -- request ---------------------------------------------------------------------------

    async def _read_request(self) -> Any:
        try:
            msg = await self.ws.receive(timeout=REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise InvalidArgument("no watch request within "
                                  f"{REQUEST_TIMEOUT_S:.0f}s of connecting") from None
        if msg.type is WSMsgType.TEXT:
            self.json = True
            try:
                return json.loads(msg.data)
            except ValueError:
                raise InvalidArgument("the watch request is not valid JSON") from None
        if msg.type is WSMsgType.BINARY:
            try:
                return unpack(msg.data, max_bytes=1 << 16)
            except Exception:
                raise InvalidArgument("the watch request is not valid msgpack") from None
        raise ConnectionError("the peer closed before sending a watch request")

    def _serving_store(self) -> Store:
        store = self.ctx.store
        if store is None:
            raise Unavailable("the node is not serving (recovering or stopping)")
        if self._eventual and self.ctx.read_guard is not None:
            # The eventual-read rules: a replica within the bound, a primary with its lease.
            self.ctx.read_guard({"consistency": "eventual",
                                 "max_staleness_ms": self._bound})
            if self.ctx.role != "primary" and store.watch_hub.commit_limit is None:
                # Not following a primary (starting, or left the shard): it cannot tell
                # which of its entries are committed.
                raise Unavailable(f"this {self.ctx.role} follows no primary; retry elsewhere")
        elif self._retired and self.ctx.role not in ("primary", "replica"):
            # A member of a shard that left the map: nothing is written to its log any
            # more, and what it holds up to its commit limit (a former primary: all it
            # applied, which passed its commit gate) is committed. It serves that to a
            # client still catching up with the shard's writes up to its crossing LSN.
            return store
        elif self.ctx.role != "primary":
            raise NotPrimary("strong watches are served by the shard's primary",
                             primary=self.ctx.primary)
        return store

    # -- the stream ------------------------------------------------------------------------

    async def _run(self, request: WatchRequest, store: Store) -> None:
        shard = self._shard()
        hub = store.watch_hub
        wanted = request.start_version
        # Not the primary: the client's position may be ahead of this member, or behind its
        # log; another member (the primary last) may serve it, so both are retryable here.
        primary = self.ctx.role == "primary"
        if wanted is not None and wanted > store.last_lsn:
            if not primary:
                raise TooStale(f"this {self.ctx.role} holds the shard up to version "
                               f"{store.last_lsn}, behind {wanted}", version=store.last_lsn)
            raise InvalidArgument(f"start_version {wanted} is in the future: the shard's "
                                  f"last version is {store.last_lsn}", version=store.last_lsn)
        oldest = _oldest_version(store)
        if wanted is not None and wanted < oldest:
            if not primary:
                raise Unavailable(f"this {self.ctx.role}'s log starts after version {oldest}; "
                                  f"the primary may hold {wanted}", compact_version=oldest)
            raise Compacted(f"history before version {oldest} was compacted",
                            compact_version=oldest)
        # No await from here to subscribe(): the hub's LSN is exactly where history ends.
        start = hub.published_lsn if wanted is None else wanted
        if wanted is None and hub.commit_limit is not None:
            start = min(start, hub.commit_limit)  # "now" is what is known committed
        subscriber = self._subscribe(store, request, start)
        await self._send({"type": "created", "shard": shard, "version": subscriber.after,
                          "start_version": start, "compact_version": oldest})
        sent = start
        while sent < subscriber.after:
            upto = _committed(hub.commit_limit, subscriber.after)
            if upto <= sent:
                await self._await_commit(subscriber)
                continue
            sent = await self._send_history(store, request, sent, upto)
            if subscriber.overflowed:  # history took long enough to overflow: follow again
                self._unsubscribe()
                subscriber = self._subscribe(store, request, sent)
        reader = asyncio.create_task(self._read_until_closed(subscriber))
        try:
            await self._send_live(request, subscriber, store, sent)
        finally:
            reader.cancel()

    async def _await_commit(self, subscriber: Subscriber) -> None:
        """A replica waiting for its primary to say the next entries are committed."""
        if subscriber.closed_reason is not None:
            raise Unavailable(f"the watch ended on the node: {subscriber.closed_reason}")
        self._serving_store()
        await subscriber.wait_poke(min(self._check_s, 1.0))

    def _subscribe(self, store: Store, request: WatchRequest, start: int) -> Subscriber:
        hub = store.watch_hub
        if self._subscriber is None and len(hub) >= hub.max_watches:
            raise Unavailable(f"this node serves {hub.max_watches} watches already")
        subscriber = Subscriber(request.watch, self._shard(), request.values,
                                after=max(start, hub.published_lsn),
                                max_events=self.max_events, max_bytes=self.max_bytes)
        hub.subscribe(subscriber)
        self._subscriber = subscriber
        return subscriber

    def _unsubscribe(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        store = self.ctx.store
        if subscriber is not None and store is not None:
            store.watch_hub.unsubscribe(subscriber)

    async def _send_history(self, store: Store, request: WatchRequest, after: int,
                            upto: int) -> int:
        """Send the matching events of entries ``after < lsn <= upto`` from the log."""
        shard = self._shard()
        try:
            entries = await asyncio.to_thread(store.wal.read_from, after + 1)
            while True:
                chunk = await asyncio.to_thread(_take, entries, HISTORY_CHUNK, upto)
                batches = []
                for entry in chunk:
                    events = entry_events(entry, request.watch, shard, values=request.values)
                    if events:
                        batches.append(Batch(entry.lsn, events, events_size(events)))
                await self._send_batches(shard, batches)
                if chunk:
                    after = chunk[-1].lsn
                if len(chunk) < HISTORY_CHUNK:
                    break
            if after < upto:
                raise Unavailable(f"the log ended at {after}, before {upto}; retry")
        except LsnCompacted as exc:
            raise Compacted(f"history was compacted while being read: {exc}",
                            compact_version=_oldest_version(store)) from None
        return upto

    async def _send_live(self, request: WatchRequest, subscriber: Subscriber, store: Store,
                         sent: int) -> None:
        """Live events, and progress: only an LSN whose events were all sent (``safe``) is
        ever reported, since the client resumes from it. While it sleeps with everything
        sent, a strong watch lets the hub write its events (``sink``, live_sink.py); the
        sink's ``sent`` is then the last version written."""
        shard = self._shard()
        hub = store.watch_hub
        interval = request.progress_interval_s
        sink = None
        if self._transport is not None and not self._eventual:
            sink = self._sink = LiveSink(self.ws, self._transport, self.ctx, hub, shard,
                                         self._ring, as_json=self.json, sent=sent)
        safe = sent
        await self._send({"type": "progress", "shard": shard, "version": safe})
        reported = safe
        next_progress = time.monotonic() + interval
        held: deque[Batch] = deque()  # taken but above the commit limit (a replica)
        held_events = 0
        while True:
            if sink is not None:
                sent = max(sent, sink.sent)
            if subscriber.overflowed:
                raise SlowConsumer(
                    f"the watch fell more than {self.max_events} events or "
                    f"{self.max_bytes} bytes behind; resume from version {sent}", version=sent)
            closed = subscriber.closed_reason is not None
            if not closed:
                self._serving_store()
            batches, covered = subscriber.take()
            limit = hub.commit_limit
            if limit is not None or held:
                held.extend(batches)
                held_events += sum(len(b.events) for b in batches)
                batches = []
                while held and (limit is None or held[0].version <= limit):
                    batch = held.popleft()
                    held_events -= len(batch.events)
                    batches.append(batch)
                if held_events > self.max_events:
                    raise TooStale(f"{held_events} events wait for the primary's commit "
                                   f"point, which is not advancing; resume elsewhere",
                                   version=sent)
            if batches:
                await self._send_batches(shard, batches)
                sent = batches[-1].version
            safe = _committed(limit, covered)
            if closed:
                # What was applied (on a replica: and committed) before the end is sent;
                # say how far it goes, so the client resumes from there (a migration's LSN
                # jump closes every watch; the client then resumes above the jump,
                # docs/watch.md).
                if safe > reported:
                    await self._send({"type": "progress", "shard": shard, "version": safe})
                raise Unavailable(f"the watch ended on the node: {subscriber.closed_reason}")
            now = time.monotonic()
            if now >= next_progress:
                if safe > sent or safe == reported:  # news, or idle: say so
                    await self._send({"type": "progress", "shard": shard, "version": safe})
                reported = safe
                next_progress = now + interval
            # Everything taken is sent: the hub may write what comes next, unless frames
            # wait for the commit limit (they must go first, and in order).
            subscriber.sink = sink if not held and limit is None else None
            try:
                await subscriber.wait(max(0.0, min(next_progress - time.monotonic(),
                                                   self._check_s)))
            finally:
                subscriber.sink = None

    async def _read_until_closed(self, subscriber: Subscriber) -> None:
        """Read (and ignore) what the client sends, so its close is seen at once."""
        with contextlib.suppress(Exception):
            async for _ in self.ws:
                pass
        subscriber.close("the client closed the watch")

    # -- frames ----------------------------------------------------------------------------

    async def _send_batches(self, shard: str, batches: list[Batch]) -> None:
        """``batches`` in frames of about FRAME_EVENTS events or FRAME_BYTES at most (whole
        entries). A live session that keeps up sends one batch a frame: a frame the hub's
        other sessions of the same group share (``event_frames.py``)."""
        first = events = size = 0
        for n, batch in enumerate(batches):
            events += len(batch.events)
            size += batch.size
            if events >= FRAME_EVENTS or size >= FRAME_BYTES:
                await self._send_events(shard, batches[first:n + 1])
                first, events, size = n + 1, 0, 0
        if first < len(batches):
            await self._send_events(shard, batches[first:])

    async def _send_events(self, shard: str, batches: list[Batch]) -> None:
        await self._send_encoded(events_frame(shard, self._ring(), batches, as_json=self.json))
        self._events_sent += sum(len(b.events) for b in batches)

    def _ring(self) -> int | None:
        """The ring version an events frame carries. The ring this node knows now is at
        least the one it checked ownership with when it took these writes: a client
        classifies moved keys with a map that new (docs/watch.md, "Resharding"). A replica's
        own map may lag its primary's, so it says at least the ring its primary's frames
        carried. Absent outside a cluster."""
        ring = self.ctx.ring_version
        store = self.ctx.store
        primary_ring = None if store is None else store.watch_hub.primary_ring
        if primary_ring is not None and (ring is None or primary_ring > ring):
            ring = primary_ring
        return ring

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_encoded(to_json(frame).decode() if self.json else pack(frame))

    async def _send_encoded(self, frame: bytes | str) -> None:
        """Send a frame already encoded (JSON text or msgpack bytes), or time out.
        ``asyncio.timeout`` rather than ``wait_for``, which on Python 3.11 runs the send in
        a task of its own: per watch and frame, at fan-out."""
        if self.ws.closed:
            raise ConnectionError("the watch connection is closed")
        async with asyncio.timeout(self.send_timeout_s):
            if isinstance(frame, str):
                await self.ws.send_str(frame)
            else:
                await self.ws.send_bytes(frame)


def _oldest_version(store: Store) -> int:
    """The smallest start_version the log can serve: everything after it is still there."""
    first = store.wal.first_lsn
    return first - 1 if first else store.wal.last_lsn


def _committed(limit: int | None, lsn: int) -> int:
    """``lsn``, or the commit limit when that is lower (a replica)."""
    return lsn if limit is None else min(limit, lsn)


def _take(entries: Iterator[WalEntry], limit: int, upto: int) -> list[WalEntry]:
    chunk: list[WalEntry] = []
    for entry in entries:
        if entry.lsn > upto:
            break
        chunk.append(entry)
        if len(chunk) >= limit:
            break
    return chunk

"""The replica's side of WAL shipping: follow the primary, stay durable, know how stale.

A ``ReplicationReplica`` keeps one WebSocket to its primary's ``/v1/replicate``. It says hello
with its epoch and its log's last entry; the primary answers where to resume (see
``replication_protocol.resume_point``): stream on, truncate a diverged suffix, or take a
snapshot. Then, for every ``entries`` frame: append durably and apply (``ReplicaTarget``),
then acknowledge the LSN now durable. A broken stream is retried with exponential backoff and
jitter (50 ms doubling to 2 s), reset after a successful handshake.

Staleness is measured in this node's own monotonic time from what the primary says: each
frame from the primary carries the primary's last LSN ``P`` at the moment it was sent; once
this replica has applied ``P``, it was as fresh as the primary at the moment that frame was
sent. ``staleness_ms`` is the time since then. An idle primary sends heartbeats, so an idle
shard stays fresh; a dead stream makes it stale, as it should (the bound is what a reader
asked for). The moment of sending is the arrival time minus the frame's age in transit, the
one place two machines' wall clocks are compared (see ``_saw_primary_at`` for what their
skew does).

Fencing on this side: the replica knows the epoch the map gives its shard and refuses a
primary that answers with an older one (a deposed primary that has not noticed yet); the
primary, seeing a newer epoch in the hello, answers ``STALE_EPOCH`` and learns it is deposed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from shardkv.cluster.cluster_token import cluster_token
from shardkv.cluster.errors import (
    ErrorCode,
    Forbidden,
    InvalidArgument,
    StaleEpoch,
    Unauthorized,
    error_from_dict,
)
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.replication import protocol as proto
from shardkv.node.replication import stream_auth
from shardkv.node.replication.majority_lease import LeasePromise
from shardkv.node.replication.replica_log import CannotRollBack, ReplicaTarget
from shardkv.node.testing import failpoints

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
CONNECT_TIMEOUT_S = 3.0


class StreamEnded(Exception):
    """The primary closed the stream or sent something this replica cannot follow."""


class ReplicationReplica:
    """Follows ``primary_url``; see the module docstring. ``start``/``stop``; ``retarget`` when
    the map names another primary or a newer epoch."""

    def __init__(
        self,
        target: ReplicaTarget,
        *,
        node_id: str,
        primary_url: str | None,
        epoch: int,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = NODE_CLOCK.monotonic,
        wall_clock: Callable[[], float] = NODE_CLOCK.wall,
        promise: LeasePromise | None = None,
    ) -> None:
        self.target = target
        # Lease grants to the primary, and the promise they make (majority_lease.py).
        self.promise = promise
        self._wall_clock = wall_clock
        self.node_id = node_id
        self.primary_url = primary_url
        # The primary's node id per the map: the stream's server must prove it is that node.
        self.primary_id: str | None = None
        self._nonce = ""
        self.epoch = epoch
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._retarget = asyncio.Event()
        self._fresh_at: float | None = None
        self._pending_fresh: collections.deque[tuple[int, float]] = collections.deque()
        self.primary_lsn = 0
        self.commit_lsn = 0
        # Told each time ``commit_lsn`` rises (the watch hub: a replica serves watches up
        # to its primary's commit point, node/watch/watch_hub.py).
        self.on_commit: Callable[[int], None] | None = None
        # Told the primary's ring version as frames bring it (the watch hub: the ring a
        # replica's watch frames are stamped with is at least the primary's).
        self.on_ring: Callable[[int], None] | None = None
        self.connected = False
        self.handshakes = 0
        self.reconnects = 0
        self.snapshots_installed = 0
        self.truncations = 0
        self.last_error: str | None = None
        self._synced = asyncio.Event()

    # ---------------------------------------------------------------------------- control

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="replication-replica")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self.connected = False

    def retarget(self, primary_url: str | None, epoch: int) -> None:
        """Follow another primary (or the same one in a newer epoch): the current stream is
        dropped and a new handshake made."""
        if epoch < self.epoch:
            return
        if primary_url == self.primary_url and epoch == self.epoch:
            return
        self.primary_url, self.epoch = primary_url, epoch
        self._retarget.set()

    # -------------------------------------------------------------------------- freshness

    def staleness_ms(self) -> float | None:
        """Milliseconds since this replica last held everything its primary had (None:
        never in step since it started)."""
        if self._fresh_at is None:
            return None
        return max(0.0, (self._clock() - self._fresh_at) * 1000)

    def is_fresh_within(self, max_staleness_ms: float) -> bool:
        staleness = self.staleness_ms()
        return staleness is not None and staleness <= max_staleness_ms

    async def wait_synced(self, within_s: float) -> None:
        """Wait until the first handshake finished (tests and startup)."""
        await asyncio.wait_for(self._synced.wait(), within_s)

    def _saw_primary_at(self, primary_lsn: int, received_at: float,
                        sent_ts: Any = None) -> None:
        """The primary was at ``primary_lsn`` when it sent this message.

        When the message carries the primary's clock (``sent_ts``), its age in transit is taken
        off: a message held up by a partition (TCP retransmits it seconds after the heal) must
        not make the replica look fresh as of its arrival. The age is our wall clock minus the
        primary's, so their skew enters: a replica whose clock is ahead by ``D`` takes ``D``
        too much off and looks staler by ``D``; one whose clock is behind takes too little
        off and looks fresher than it is, by ``D`` at most and never by more than the age in
        transit (a negative age counts as none): never fresher than its arrival time."""
        if isinstance(sent_ts, int | float) and not isinstance(sent_ts, bool) and sent_ts > 0:
            received_at -= max(0.0, self._wall_clock() - float(sent_ts))
        self.primary_lsn = max(self.primary_lsn, primary_lsn)
        if self.target.applied_lsn >= primary_lsn:
            self._fresh_at = received_at
            self._pending_fresh.clear()
        else:
            self._pending_fresh.append((primary_lsn, received_at))

    def _applied_up_to(self, applied: int) -> None:
        pending = self._pending_fresh
        while pending and pending[0][0] <= applied:
            self._fresh_at = pending.popleft()[1]

    # --------------------------------------------------------------------------- the loop

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            self._retarget.clear()
            url = self.primary_url
            if url is None:
                await self._retarget.wait()
                continue
            started = self.handshakes
            try:
                await self._follow(url)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, StreamEnded, InvalidArgument,
                    Unauthorized, Forbidden,
                    StaleEpoch, CannotRollBack) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.info("replication stream ended", extra=log_fields(
                    primary=url, error=self.last_error, lsn=self.target.last_lsn))
            except Exception as exc:  # a local failure (disk): keep trying, loudly
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("replication failed locally", extra=log_fields(primary=url))
            finally:
                self.connected = False
            self.reconnects += 1
            if self.handshakes > started:
                backoff = BACKOFF_MIN_S
            delay = backoff * (0.5 + random.random())
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retarget.wait(), delay)

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse | None:
        """Open the stream to ``url``, or None when the map named another primary meanwhile.

        Bounded by ``CONNECT_TIMEOUT_S`` and given up at once on ``retarget``: a primary whose
        host is gone does not refuse a connection, it never answers (a crashed machine, a
        stopped container), and the kernel keeps retrying a SYN for about two minutes. A
        replica stuck there would not follow the new primary, which could then not reach a
        majority (found by the chaos harness's container mode; local processes refuse at
        once)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._nonce = stream_auth.new_nonce()
        connecting = asyncio.ensure_future(self._session.ws_connect(
            url.rstrip("/") + proto.PATH, max_msg_size=proto.MAX_FRAME_BYTES, compress=0,
            autoping=True, headers=stream_auth.claim_headers(self.node_id, self._nonce),
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0), heartbeat=None))
        retarget = asyncio.ensure_future(self._retarget.wait())
        try:
            await asyncio.wait({connecting, retarget}, timeout=CONNECT_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            retarget.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
                    await connecting
        if connecting.cancelled():
            if self._retarget.is_set():
                return None
            raise TimeoutError(f"no connection to {url} within {CONNECT_TIMEOUT_S} s")
        return connecting.result()  # raises what the connection attempt raised

    async def _follow(self, url: str) -> None:
        if self.promise is not None:
            # A lease granted to an older epoch's primary binds us: no hello to a newer one
            # (it would count our acknowledgements) until that promise has run out.
            await self.promise.wait_free_for(self.epoch)
        ws = await self._connect(url)
        if ws is None:
            return  # retargeted while connecting: the loop follows the new primary
        async with ws:
            secret = cluster_token()
            if secret is not None:  # the primary proves itself before we prove anything
                await stream_auth.prove_to_primary(ws, self.node_id, self._nonce,
                                                   self.primary_id, secret)
            stream = _Frames(ws)
            await self._handshake(ws, stream)
            self.connected = True
            retarget = asyncio.ensure_future(self._retarget.wait())
            try:
                await self._stream(ws, stream, retarget)
            finally:
                retarget.cancel()

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse, stream: _Frames) -> None:
        want_snapshot = False
        while True:
            hello = proto.Hello(self.node_id, self.epoch, self.target.last_lsn,
                                self.target.last_epoch, want_snapshot)
            await ws.send_bytes(hello.encode())
            message = await stream.next()
            kind = message["t"]
            if kind == proto.ERROR:
                raise _error(message)
            if kind == proto.TRUNCATE:
                keep = proto.need_int(message, "lsn")
                if keep < self.target.applied_lsn:
                    want_snapshot = True
                    continue
                await self.target.truncate_after(keep)
                self.truncations += 1
                logger.warning("dropped a diverged log suffix", extra=log_fields(
                    kept_lsn=keep, primary=self.primary_url))
                continue
            if kind == proto.SNAPSHOT:
                await self._install_snapshot(message, stream)
                message = await stream.next()
                kind = message["t"]
            if kind != proto.WELCOME:
                raise StreamEnded(f"expected welcome, got {kind}")
            # The primary picked the session's version; it must be one this node speaks.
            version = proto.version_of(message)
            if proto.negotiate(proto.PROTOCOL_VERSION, version,
                               peer=f"primary at {self.primary_url}") != version:
                raise StreamEnded(f"primary at {self.primary_url} chose protocol version "
                                  f"{version}, above this node's {proto.PROTOCOL_VERSION}")
            epoch = proto.need_int(message, "epoch")
            if epoch < self.epoch:
                raise StaleEpoch(f"primary at {self.primary_url} is in epoch {epoch}, older "
                                 f"than {self.epoch}")
            if self.promise is not None and self.promise.blocking_s(epoch) > 0:
                raise StreamEnded(f"a lease granted in epoch {self.promise.epoch} still runs; "
                                  f"epoch {epoch} must wait for it")
            self.epoch = epoch
            start = proto.need_int(message, "start_lsn")
            if start != self.target.last_lsn + 1:
                raise StreamEnded(f"primary resumes at {start}, log ends at "
                                  f"{self.target.last_lsn}")
            self.handshakes += 1
            self._synced.set()
            await ws.send_bytes(proto.encode(proto.ACK, lsn=self.target.last_lsn))
            self._saw_primary_at(proto.need_int(message, "primary_lsn"), self._clock())
            logger.info("following primary", extra=log_fields(
                primary=self.primary_url, epoch=epoch, start_lsn=start))
            return

    async def _install_snapshot(self, message: dict[str, Any], stream: _Frames) -> None:
        lsn = proto.need_int(message, "lsn")
        epoch = proto.need_int(message, "epoch")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                frame = await stream.next()
                if frame["t"] == proto.SNAPSHOT_END:
                    return
                if frame["t"] != proto.CHUNK or not isinstance(frame.get("data"), bytes):
                    raise StreamEnded(f"expected a snapshot chunk, got {frame['t']}")
                yield frame["data"]

        await self.target.install_snapshot(chunks(), lsn, epoch)
        self._pending_fresh.clear()
        self.snapshots_installed += 1
        logger.info("installed a snapshot from the primary", extra=log_fields(
            lsn=lsn, epoch=epoch, primary=self.primary_url))

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse, stream: _Frames,
                      retarget: asyncio.Future[Any]) -> None:
        """Follow the stream until ``retarget`` completes (then return: the loop reconnects
        at once) or the stream ends.

        Frames are read in this task, not in a task per frame raced against ``retarget``
        (that cost a task and two loop iterations per frame, on every write's path): a
        retarget cancels the wait for the next frame instead, never the handling of one."""
        task = asyncio.current_task()
        assert task is not None
        waiting = False
        cancelled_by_retarget = False

        def stop_waiting(_: asyncio.Future[Any]) -> None:
            nonlocal cancelled_by_retarget
            if waiting:
                cancelled_by_retarget = True
                task.cancel()

        retarget.add_done_callback(stop_waiting)
        try:
            while not retarget.done():
                waiting = True
                try:
                    message = await stream.next()
                except asyncio.CancelledError:
                    if cancelled_by_retarget and task.uncancel() == 0:
                        return  # retargeted: the loop reconnects at once
                    raise
                finally:
                    waiting = False
                await self._handle(ws, message)
        finally:
            retarget.remove_done_callback(stop_waiting)

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse,
                      message: dict[str, Any]) -> None:
        """One frame from the primary, while streaming."""
        received_at = self._clock()
        kind = message["t"]
        ring = message.get("ring")
        if type(ring) is int and self.on_ring is not None:
            self.on_ring(ring)  # before the entries: they were written under at most it
        if kind == proto.ENTRIES:
            entries = proto.decode_entries(message)
            if entries:
                await self._append(entries)
                if failpoints.ARMED:
                    await failpoints.hit("replica_before_ack")
                await ws.send_bytes(self._ack(message))
                self._applied_up_to(self.target.applied_lsn)
            commit = message.get("commit_lsn")
            if type(commit) is int:
                self._committed(commit)
            self._saw_primary_at(proto.need_int(message, "primary_lsn"), received_at,
                                 message.get("ts"))
        elif kind == proto.HEARTBEAT:
            self._committed(proto.need_int(message, "commit_lsn"))
            if self.promise is not None and message.get("release") is True:
                self.promise.release(self.epoch)  # fenced primary: it holds no lease now
            elif proto.lease_query(message) is not None and self.promise is not None:
                await ws.send_bytes(self._ack(message))
            self._saw_primary_at(proto.need_int(message, "primary_lsn"), received_at,
                                 message.get("ts"))
        elif kind == proto.ERROR:
            raise _error(message)
        else:
            raise StreamEnded(f"unexpected {kind} while streaming")

    async def _append(self, entries: list[Any]) -> None:
        first = entries[0]
        if first.lsn != self.target.last_lsn + 1:
            raise StreamEnded(f"entry {first.lsn} does not follow {self.target.last_lsn}")
        if entries[-1].epoch > self.epoch:
            raise StreamEnded(f"entry epoch {entries[-1].epoch} is newer than the stream's "
                              f"{self.epoch}")
        if failpoints.ARMED:
            await failpoints.hit("replica_before_apply")
        await self.target.append(entries)

    def _committed(self, lsn: int) -> None:
        if lsn > self.commit_lsn:
            self.commit_lsn = lsn
            if self.on_commit is not None:
                self.on_commit(lsn)

    def _ack(self, message: dict[str, Any]) -> bytes:
        """The acknowledgement of ``message``; it grants a lease when the primary asked for
        one and our promise allows it (the grant is made now, after the frame arrived)."""
        lq = proto.lease_query(message)
        if lq is not None and self.promise is not None and self.promise.grant(self.epoch):
            return proto.encode(proto.ACK, lsn=self.target.last_lsn, lq=lq)
        return proto.encode(proto.ACK, lsn=self.target.last_lsn)

    def stats(self) -> dict[str, Any]:
        return {
            "primary": self.primary_url,
            "epoch": self.epoch,
            "connected": self.connected,
            "last_lsn": self.target.last_lsn,
            "applied_lsn": self.target.applied_lsn,
            "primary_lsn": self.primary_lsn,
            "lag_entries": max(0, self.primary_lsn - self.target.applied_lsn),
            "staleness_ms": self.staleness_ms(),
            "reconnects": self.reconnects,
            "snapshots_installed": self.snapshots_installed,
            "truncations": self.truncations,
            "last_error": self.last_error,
        }


class _Frames:
    """Decoded messages from the primary; a close or a non-binary frame ends the stream."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def next(self) -> dict[str, Any]:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return proto.decode_stream(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
            raise StreamEnded("the primary closed the stream")
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise StreamEnded(f"stream error: {self._ws.exception()!r}")
        raise StreamEnded(f"unexpected {msg.type.name} frame")


def _error(message: dict[str, Any]) -> Exception:
    error = error_from_dict(message)
    if error.code is ErrorCode.STALE_EPOCH:
        return StaleEpoch(error.message, **error.details)
    return StreamEnded(f"primary refused: {error.code.value}: {error.message}")

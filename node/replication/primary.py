"""The primary's side of WAL shipping: stream to every replica, count acknowledgements.

Each replica gets its own sender task, so a slow or stuck replica only ever delays itself:
writes never wait on a socket. A sender takes entries from a bounded in-memory tail of the
newest entries (``publish`` feeds it; ``entry_tail.py``); a replica behind the tail is served
from the WAL files (in a worker thread, a frame's worth at a time), and one behind the oldest
retained segment, or that cannot roll back its diverged suffix, gets a snapshot first.

A sender keeps at most ``send_window`` (2) frames of entries unacknowledged, and a second
only while the first is small (at most ``OVERLAP_ENTRIES`` entries out). A replica handles
frames one at a time (append, fsync, ack), so a frame sent while it is busy would only wait in
its socket; held back, what arrives meanwhile leaves in one frame, and both sides pay one
frame, fsync and ack for it instead of one per loop iteration. Under light load the second
frame is worth its cost: it is already queued when the replica acks the first, which saves
its entries a round trip (one writer at a time per shard waits less). Under load it left with
whatever had arrived when it could, small, and split what would have been one frame in two:
on the 2x3 cluster at 64 puts in flight, one frame out made frames 1.35x larger (16 entries,
not 11.8) and the replicas' CPU per put 0.86x, the nodes' 0.92x; with 4 in flight it cost
0.92x the puts per second (issue 17, ``bench.cluster_put_ab``). Hence the rule: overlap while
the frame out is small (light load), hold back once it is not.

Replicas acknowledge the LSN they hold durably. ``majority_lsn`` is the highest LSN that a
majority of the shard's members (the primary counted, once it holds the entry durably
itself) hold (``majority_commit.py``); ``wait_for_majority`` is what the commit gate awaits
for write concern ``majority``. Acknowledgements are counted per member id and survive a
reconnect (durable is durable), but only from ids in the shard's current membership: a
removed node never makes a write look committed.

Fencing on this side: a replica that says hello with an epoch newer than ours proves that a
newer primary exists; we answer ``STALE_EPOCH`` and tell the node (``on_newer_epoch``) so it
stops acknowledging anything. ``close`` fails every waiter with ``UNAVAILABLE``: a deposed
primary's pending writes are never reported acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from shardkv.cluster.errors import (
    Forbidden,
    InvalidArgument,
    ShardKVError,
    StaleEpoch,
    Unavailable,
)
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import NODE_CLOCK
from shardkv.node.replication import protocol as proto
from shardkv.node.replication.entry_tail import EntryTail, decode_payload, take_frame
from shardkv.node.replication.heartbeat_timer import HeartbeatTimer
from shardkv.node.replication.majority_commit import MajorityCommit
from shardkv.node.storage.snapshots.snapshot import SnapshotMeta
from shardkv.node.storage.snapshots.transfer import iter_snapshot_chunks
from shardkv.node.testing import failpoints
from shardkv.node.wal.record import WalEntry
from shardkv.node.wal.wakeup import Wakeup
from shardkv.node.wal.write_ahead_log import LsnCompacted, WriteAheadLog

logger = logging.getLogger(__name__)

SnapshotSource = Callable[[], Awaitable[SnapshotMeta]]
StreamAuthenticator = Callable[[web.WebSocketResponse, web.Request], Awaitable[str]]
SNAPSHOT_CHUNK_BYTES = 1 << 20
# A further frame leaves while at most this many entries are unacknowledged (module docstring).
OVERLAP_ENTRIES = 2


@dataclass(slots=True)
class ReplicaProgress:
    """What the primary knows about one replica (kept across its reconnects)."""

    node_id: str
    acked_lsn: int = 0
    sent_lsn: int = 0
    connected: bool = False
    connections: int = 0
    snapshots_sent: int = 0
    last_ack_at: float | None = None  # monotonic
    frames_sent: int = 0  # ENTRIES frames; entries_sent / frames_sent is the batching
    entries_sent: int = 0


@dataclass(slots=True, eq=False)  # kept in a set, by identity
class _Session:
    """One stream to a replica: its sender's wakeup and its window of unacknowledged frames
    (the last LSN of each). ``held``: the sender waits for an ack, so a publish need not
    wake it. ``wakeup`` is a loop-bound flag, not an ``asyncio.Event``: the sender blocks
    once per frame, and an Event's wait looks the running loop up each time, a ``getpid()``
    system call on Python 3.11 (``node/wal/wakeup.py``)."""

    wakeup: Wakeup
    in_flight: collections.deque[int] = field(default_factory=collections.deque)
    held: bool = False


class ReplicationPrimary:
    """See the module docstring. ``members()`` returns the shard's member ids, this node's
    included; ``epoch()`` the epoch this node is primary in."""

    def __init__(
        self,
        wal: WriteAheadLog,
        *,
        node_id: str,
        epoch: Callable[[], int],
        members: Callable[[], Collection[str]],
        snapshot_source: SnapshotSource,
        heartbeat_s: float = 0.1,
        tail_entries: int = 8192,
        tail_bytes: int = 64 << 20,
        clock: Callable[[], float] = NODE_CLOCK.wall,
        monotonic_clock: Callable[[], float] = NODE_CLOCK.monotonic,
        on_newer_epoch: Callable[[int], None] | None = None,
        on_grant: Callable[[str, float], None] | None = None,
        ring_version: Callable[[], int | None] = lambda: None,
        send_window: int = 2,
    ) -> None:
        if send_window < 1:
            raise ValueError(f"send_window must be at least 1, got {send_window}")
        self.wal = wal
        self.send_window = send_window  # ENTRIES frames unacknowledged per replica
        self._ring_version = ring_version  # the node's ring: sent along (protocol.py, ``ring``)
        self._session_versions: dict[str, int] = {}  # replica -> the version its session speaks
        self.node_id = node_id
        self._epoch = epoch
        self._members = members
        self._snapshot_source = snapshot_source
        self.heartbeat_s = heartbeat_s
        self._tail = EntryTail(tail_entries, tail_bytes)
        self._clock = clock  # wall: the ts on frames, compared with entries' ts
        self._monotonic_clock = monotonic_clock
        self._on_newer_epoch = on_newer_epoch
        self._on_grant = on_grant  # a replica granted a lease (majority_lease.py)
        self._releasing = False  # fenced: ask no grants, tell replicas their promise is void
        self._progress: dict[str, ReplicaProgress] = {}
        self._commit = MajorityCommit(
            node_id, members, lambda: [(p.node_id, p.acked_lsn) for p in self._progress.values()],
            wal.durable_lsn)
        self._closed: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sessions: set[_Session] = set()
        self.reconnects = 0

    # -------------------------------------------------------------- the write path's side

    @property
    def majority_lsn(self) -> int:
        return self._commit.lsn

    def publish(self, entry: WalEntry) -> None:
        """Offer an entry the WAL has accepted to the senders (in LSN order; a gap resets the
        tail, the WAL files cover it)."""
        if self._tail.add(entry):
            self._wake_senders()

    def local_durable(self, lsn: int) -> None:
        """This node holds everything up to ``lsn`` durably (and, the WAL says, everything up
        to its ``durable_lsn``: one recount per group commit, not one per entry)."""
        if lsn > self._commit.local:
            self._commit.local_durable(max(lsn, self.wal.durable_lsn))

    def passed(self, entry: WalEntry) -> bool:
        """``commit_gate`` without an await, for the common case: True when a majority
        already holds ``entry`` (it is published and counted as durable here); False when
        the caller must await ``commit_gate`` (not yet, closed, or a failpoint is armed)."""
        if failpoints.ARMED or self._closed is not None:
            return False
        self.publish(entry)
        self.local_durable(entry.lsn)
        return self._commit.lsn >= entry.lsn

    async def commit_gate(self, entry: WalEntry) -> None:
        """The Store's commit gate for write concern ``majority``: called in LSN order once
        the entry is durable here; returns once a majority holds it. It never times out by
        itself (the writer's own deadline answers TIMEOUT); ``close`` fails it."""
        self.publish(entry)
        self.local_durable(entry.lsn)
        if failpoints.ARMED:
            await failpoints.hit("primary_before_commit")
        await self.wait_for_majority(entry.lsn, None)

    async def wait_for_majority(self, lsn: int, within_s: float | None) -> None:
        """Return once a majority of the members hold ``lsn`` durably. Raises ``Timeout``
        after ``within_s`` seconds, ``Unavailable`` if this primary was closed/deposed."""
        if self._closed is not None:
            raise Unavailable(f"not primary any more: {self._closed}")
        await self._commit.wait(lsn, within_s)

    def members_changed(self) -> None:
        """Call after the shard's membership changed (a smaller quorum may now be met)."""
        self._commit.recount()

    # -------------------------------------------------------------------------- serving

    async def serve(self, request: web.Request,
                    authenticate: StreamAuthenticator | None = None) -> web.StreamResponse:
        """The ``/v1/replicate`` handler: one replica's whole session. ``authenticate``
        (``stream_auth.py``) runs first and names the replica the session is for."""
        ws = web.WebSocketResponse(max_msg_size=proto.MAX_FRAME_BYTES, compress=False,
                                   heartbeat=max(1.0, self.heartbeat_s * 20))
        await ws.prepare(request)
        progress: ReplicaProgress | None = None
        sender: asyncio.Task[None] | None = None
        session = _Session(Wakeup(asyncio.get_running_loop()))
        try:
            if self._closed is not None:
                raise Unavailable(f"not primary any more: {self._closed}")
            authenticated = await authenticate(ws, request) if authenticate else None
            hello, start = await self._handshake(ws, authenticated)
            progress = self._progress.setdefault(hello.node, ReplicaProgress(hello.node))
            if progress.connections:
                self.reconnects += 1
            progress.connections += 1
            progress.connected = True
            progress.sent_lsn = start - 1
            legacy = self._session_versions.get(hello.node, proto.PROTOCOL_VERSION) < 2
            self._sessions.add(session)
            sender = asyncio.create_task(
                self._send_loop(ws, progress, session, start, legacy=legacy),
                name=f"replicate-to-{hello.node}")
            self._tasks.add(sender)
            await self._read_acks(ws, progress, session, sender)
        except ShardKVError as exc:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(proto.encode(proto.ERROR, **exc.to_dict()))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(session)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
                self._tasks.discard(sender)
            if progress is not None:
                progress.connected = False
            await ws.close()
        return ws

    async def _receive(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        msg = await ws.receive()
        if msg.type == WSMsgType.BINARY:
            return proto.decode(msg.data)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        raise InvalidArgument("replication frames are binary msgpack")

    async def _handshake(self, ws: web.WebSocketResponse,
                         authenticated: str | None = None) -> tuple[proto.Hello, int]:
        """Hellos until the logs match; a snapshot is sent here when needed. Returns the
        hello and the first LSN to stream. Each hello must name ``authenticated`` (when
        the stream was authenticated): acks count for that member only."""
        while True:
            message = await self._receive(ws)
            if message is None:
                raise ConnectionError("replica left during the handshake")
            if message["t"] != proto.HELLO:
                raise InvalidArgument(f"expected hello, got {message['t']}")
            hello = proto.Hello.from_message(message)
            version = proto.negotiate(proto.PROTOCOL_VERSION, hello.version,
                                      peer=f"replica {hello.node}")
            self._session_versions[hello.node] = version
            if authenticated is not None and hello.node != authenticated:
                raise Forbidden(f"authenticated as {authenticated}, said hello as {hello.node}")
            epoch = self._epoch()
            if hello.epoch > epoch:
                if self._on_newer_epoch is not None:
                    self._on_newer_epoch(hello.epoch)
                raise StaleEpoch(f"replica {hello.node} knows epoch {hello.epoch}; this "
                                 f"primary's epoch {epoch} is over", epoch=epoch)
            if hello.want_snapshot:
                resume = proto.Resume(proto.ResumeKind.SNAPSHOT, 0)
            else:
                resume = await asyncio.to_thread(self._resume_point, hello)
            if resume.kind is proto.ResumeKind.TRUNCATE:
                await ws.send_bytes(proto.encode(proto.TRUNCATE, lsn=resume.lsn, epoch=epoch))
                continue
            if resume.kind is proto.ResumeKind.SNAPSHOT:
                progress = self._progress.setdefault(hello.node, ReplicaProgress(hello.node))
                start = await self._send_snapshot(ws, progress)
            else:
                start = resume.lsn
            await ws.send_bytes(proto.encode(proto.WELCOME, epoch=epoch, start_lsn=start,
                                             primary_lsn=self.wal.last_lsn, version=version))
            logger.info("replica attached", extra=log_fields(
                replica=hello.node, start_lsn=start, replica_lsn=hello.last_lsn,
                how=resume.kind.value, epoch=epoch, protocol_version=version))
            return hello, start

    def _resume_point(self, hello: proto.Hello) -> proto.Resume:
        wal = self.wal
        return proto.resume_point(self._entry_at, wal.first_lsn, self._readable_lsn(),
                                  hello.last_lsn, hello.last_epoch)

    def _readable_lsn(self) -> int:
        """The newest LSN a reader can get: the tail's end, or what the WAL acknowledged."""
        return max(self._tail.last_lsn, self.wal.durable_lsn)

    def _entry_at(self, lsn: int) -> WalEntry | None:
        first, payloads = self._tail.snapshot()  # a copy: this runs in a thread
        if payloads and first <= lsn < first + len(payloads):
            return decode_payload(payloads[lsn - first])
        try:
            return next(iter(self.wal.read_from(lsn)), None) if lsn > 0 else None
        except LsnCompacted:
            return None

    async def _send_snapshot(self, ws: web.WebSocketResponse, progress: ReplicaProgress) -> int:
        meta = await self._snapshot_source()
        size = meta.path.stat().st_size
        await ws.send_bytes(proto.encode(proto.SNAPSHOT, lsn=meta.lsn, epoch=meta.epoch,
                                         size=size))
        chunks = iter_snapshot_chunks(meta.path, SNAPSHOT_CHUNK_BYTES)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await ws.send_bytes(proto.encode(proto.CHUNK, data=chunk))
        await ws.send_bytes(proto.encode(proto.SNAPSHOT_END, lsn=meta.lsn))
        progress.snapshots_sent += 1
        logger.info("snapshot sent", extra=log_fields(replica=progress.node_id, lsn=meta.lsn,
                                                      bytes=size))
        return meta.lsn + 1

    async def _read_acks(self, ws: web.WebSocketResponse, progress: ReplicaProgress,
                         session: _Session, sender: asyncio.Task[None]) -> None:
        """Count the replica's acknowledgements until it leaves, or until ``sender`` ends
        (then raise what ended it). An acknowledgement also closes the frames it covers in
        the session's window, which may let the sender ship again.

        The frames are read in this task, not in a task per frame raced against the sender
        (that cost a task and two loop iterations per acknowledgement, on every write's
        path): a sender that ends cancels the read instead."""
        reader = asyncio.current_task()
        assert reader is not None
        reading = True
        cancelled_by_sender = False

        def stop_reading(_: asyncio.Task[None]) -> None:
            nonlocal cancelled_by_sender
            if reading:
                cancelled_by_sender = True
                reader.cancel()

        sender.add_done_callback(stop_reading)
        in_flight = session.in_flight
        try:
            while (message := await self._receive(ws)) is not None:
                if message["t"] != proto.ACK:
                    raise InvalidArgument(f"expected ack, got {message['t']}")
                lsn = proto.need_int(message, "lsn")
                lq = proto.lease_query(message)
                if lq is not None and self._on_grant is not None:
                    self._on_grant(progress.node_id, lq)
                if lsn > progress.acked_lsn:
                    progress.acked_lsn = min(lsn, progress.sent_lsn)
                    progress.last_ack_at = self._monotonic_clock()
                    self._commit.recount()
                if in_flight and in_flight[0] <= lsn:
                    if session.held:
                        session.wakeup.set()  # the sender waits for this
                    while in_flight and in_flight[0] <= lsn:
                        in_flight.popleft()
        except asyncio.CancelledError:
            if not cancelled_by_sender or reader.uncancel() > 0:
                raise  # cancelled from outside too: the session is being torn down
        finally:
            reading = False
            sender.remove_done_callback(stop_reading)
        if sender.done():
            sender.result()  # raises what ended it

    async def _send_loop(self, ws: web.WebSocketResponse, progress: ReplicaProgress,
                         session: _Session, start: int, *, legacy: bool = False) -> None:
        """Stream entries from ``start``; ``legacy``: a version-1 replica, whose decoder
        takes mutations of exactly five fields (``protocol.encode_entries``). At most
        ``send_window`` frames wait for an ack (module docstring); a quiet stream gets a
        heartbeat every ``heartbeat_s``."""
        next_lsn = start
        window = self.send_window
        in_flight, wakeup = session.in_flight, session.wakeup
        timer = HeartbeatTimer(asyncio.get_running_loop(), self.heartbeat_s, wakeup)
        try:
            while self._closed is None:
                wakeup.clear()
                session.held = len(in_flight) >= window or (
                    bool(in_flight) and progress.sent_lsn - progress.acked_lsn > OVERLAP_ENTRIES)
                if not session.held:
                    batch = await self._next_batch(next_lsn)
                    if batch is None:  # compacted under us: the replica needs a snapshot
                        raise ConnectionError("entries were compacted; the replica must "
                                              "reconnect")
                    if batch:
                        if failpoints.ARMED:
                            await failpoints.hit("primary_before_send")
                        await ws.send_bytes(proto.encode_payloads(
                            batch, self.wal.last_lsn, self._clock(), self._lease_query(),
                            self._commit.lsn, self._ring_version(), legacy=legacy))
                        last = next_lsn + len(batch) - 1
                        next_lsn = last + 1
                        progress.sent_lsn = last
                        progress.frames_sent += 1
                        progress.entries_sent += len(batch)
                        in_flight.append(last)
                        timer.sent()
                        continue
                if timer.due:
                    await ws.send_bytes(proto.encode(
                        proto.HEARTBEAT, primary_lsn=self.wal.last_lsn,
                        commit_lsn=self._commit.lsn, ts=self._clock(),
                        lq=self._lease_query(), release=self._releasing,
                        ring=self._ring_version()))
                    timer.sent()
                    continue
                await wakeup.wait()
        finally:
            timer.cancel()

    def _lease_query(self) -> float | None:
        """The send time a replica's grant is counted from (None: no lease wanted)."""
        if self._on_grant is None or self._releasing:
            return None
        return self._monotonic_clock()

    def release_leases(self, releasing: bool = True) -> None:
        """Fenced for a switchover: the node has given its lease up, so the replicas may
        drop their promise (the next heartbeat says so) and follow the successor at once;
        ``False`` when the switchover is abandoned."""
        self._releasing = releasing

    async def _next_batch(self, lsn: int) -> list[bytes] | None:
        """The payloads of up to a frame's worth of entries from ``lsn`` (the first is
        ``lsn``'s): from the tail if it has them, else from the WAL (a thread); [] if there
        is nothing new; None if they were compacted."""
        if self._tail.covers(lsn):
            return self._tail.frame_from(lsn)
        if lsn > self.wal.durable_lsn:
            return []
        try:
            return await asyncio.to_thread(_read_batch, self.wal, lsn)
        except LsnCompacted:
            return None

    def _wake_senders(self) -> None:
        for session in self._sessions:
            if not session.held:
                session.wakeup.set()

    def notify(self) -> None:
        """New entries are durable in the WAL (when ``publish`` is not called for each)."""
        self._wake_senders()

    # ---------------------------------------------------------------------------- status

    def replicas(self) -> list[dict[str, Any]]:
        """Per replica: acknowledged LSN, lag in entries and in ms (how long the oldest
        entry it lacks has existed), connection state. For /metrics and /v1/replication."""
        last = self.wal.last_lsn
        now = self._clock()
        out = []
        for p in sorted(self._progress.values(), key=lambda p: p.node_id):
            lag_ms = 0.0
            if p.acked_lsn < last:
                oldest = self._tail.entry_at(p.acked_lsn + 1)
                lag_ms = max(0.0, (now - oldest.ts) * 1000) if oldest else float("nan")
            out.append({"node": p.node_id, "acked_lsn": p.acked_lsn, "sent_lsn": p.sent_lsn,
                        "lag_entries": max(0, last - p.acked_lsn), "lag_ms": lag_ms,
                        "connected": p.connected, "connections": p.connections,
                        "snapshots_sent": p.snapshots_sent, "frames_sent": p.frames_sent,
                        "entries_sent": p.entries_sent})
        return out

    async def close(self, reason: str = "closed") -> None:
        """Stop streaming and fail every pending majority wait with UNAVAILABLE."""
        if self._closed is None:
            self._closed = Unavailable(reason)
        self._commit.fail_all(Unavailable(f"not primary any more: {reason}"))
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


def _read_batch(wal: WriteAheadLog, lsn: int) -> list[bytes]:
    return take_frame(iter(wal.read_from(lsn)), lsn)

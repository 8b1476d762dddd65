"""The write-ahead log of a storage node: ordered, checksummed, durable entries.

Writes: ``append_nowait`` frames an entry at once (so order and the CRC chain follow call
order) and queues it; one writer task takes everything queued and writes it with one
``write()`` and one ``fdatasync()`` (``segment_writer.py``); then the whole group is
resolved. That is group commit: concurrent writers share the cost of a sync. Whether a
group is written from the event loop or from the log's own thread (``writer_thread.py``)
is ``group_placement.py``'s choice, by the sync's speed, the group's size and the machine's
idle cores. Segments roll over by size: the boundary is decided when an entry is queued, and
the writer seals the old segment (fsync) and creates the next one (tmp name, fsync, rename,
dir fsync).

Reads: ``read_from`` reads the files, bounded by what has been acknowledged, seeking through
a sparse in-memory index (a checkpoint every 64 KiB) instead of decoding from a segment's
start (``log_view.py``: the immutable view a reader thread reads through).

Recovery (``open``, see ``recovery.py``) checks every segment; a torn tail of the newest
one is repaired, any other damage raises ``WalCorruption`` naming the file and offset.

Maintenance (``truncate_after``, ``remove_before``, ``restart_at``) decides here, under the
I/O lock, and leaves the crash-ordered file work to ``segment_maintenance.py``. The directory
lock is ``directory_lock.py``; the counters behind ``stats()`` are ``write_counters.py``.

Failures: an I/O error while writing or syncing fails the group and poisons the log
(``WalFailed``): after a failed fsync the page cache can no longer be trusted (the lesson of
PostgreSQL's "fsyncgate"), so the node must restart and recover from the files.

What stays in this module is the log's state machine (the append point, the CRC chain, the
queue, the acknowledged and durable LSNs): its transitions share invariants, so they are kept
together while what does not decide them lives in the modules named above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from shardkv.cluster.structured_log import log_fields
from shardkv.node.testing import failpoints, negative_controls
from shardkv.node.wal.directory_lock import lock_directory
from shardkv.node.wal.framing import MAX_PAYLOAD_BYTES, RecordType, encode_frame
from shardkv.node.wal.group_placement import GroupPlacement
from shardkv.node.wal.log_view import LogSegment, LogView, read_view
from shardkv.node.wal.model import (
    FsyncPolicy,
    LsnCompacted,
    WalFailed,
    WalLocked,
    WalOptions,
    WalStats,
)
from shardkv.node.wal.record import WalEntry, payload_of
from shardkv.node.wal.recovery import recover_log
from shardkv.node.wal.segment import (
    CHECKPOINT_BYTES,
    Checkpoint,
    SegmentHeader,
    WalCorruption,
    check_entry,
    encode_entry,
)
from shardkv.node.wal.segment_maintenance import (
    create_restart_segment,
    cut_after,
    unlink_oldest_first,
)
from shardkv.node.wal.segment_writer import SegmentWriter
from shardkv.node.wal.wakeup import Wakeup
from shardkv.node.wal.write_counters import WriteCounters
from shardkv.node.wal.writer_thread import WalWriterThread

__all__ = [
    "FsyncPolicy",
    "LsnCompacted",
    "WalCorruption",
    "WalFailed",
    "WalLocked",
    "WalOptions",
    "WalStats",
    "WriteAheadLog",
]

T = TypeVar("T")

log = logging.getLogger("shardkv.node.wal.write_ahead_log")


@dataclass(slots=True)
class _Append:
    frame: bytes
    lsn: int
    future: asyncio.Future[None] | None  # None: a batch's earlier entry (the last has it)


class WriteAheadLog:
    """See the module docstring. Create with ``await WriteAheadLog.open(directory)``.

    ``first_lsn``: the oldest retained entry (0 if none); ``last_lsn``: the newest entry
    appended (queued included; the next append must be ``last_lsn + 1``); ``durable_lsn``:
    the newest entry durable per policy; ``last_epoch``: the epoch of the newest entry.
    """

    _io_thread: WalWriterThread  # started by open(): the groups not written from the loop

    def __init__(self, directory: Path, options: WalOptions) -> None:
        self.directory = directory
        self.options = options
        self.last_lsn = 0
        self.last_epoch = 0
        self.durable_lsn = 0
        self._segments: list[LogSegment] = []
        self._checkpoints: dict[int, list[Checkpoint]] = {}
        self._writer_io: SegmentWriter | None = None
        self._lock_fd = -1
        self._acked_lsn = 0  # futures resolved up to here (written; and synced under ALWAYS)
        self._written_lsn = 0
        self._crc = 0  # chain seed for the next queued frame
        self._tail_size = 0  # active segment size including what is queued
        self._tail_entries = 0
        self._next_seq = 1
        self._queue: list[_Append | SegmentHeader] = []
        self._loop = asyncio.get_running_loop()  # built by open(), on the loop it serves
        self._wakeup = Wakeup(self._loop)  # the writer task's alone (wakeup.py)
        self._idle = asyncio.Event()
        self._idle.set()
        self._io_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self._maintenance = False
        self._counters = WriteCounters()
        self._placement = GroupPlacement()  # loop or thread: group_placement.py
        self._view = LogView((), 0, {})

    @classmethod
    async def open(cls, directory: Path, options: WalOptions | None = None) -> WriteAheadLog:
        """Scan and check every segment, repair a torn tail of the newest one, and start the
        writer. Raises ``WalCorruption`` for damage that is not a torn tail."""
        wal = cls(Path(directory), options or WalOptions())
        wal._lock_fd = await asyncio.to_thread(lock_directory, wal.directory)
        try:
            recovered = await asyncio.to_thread(recover_log, wal.directory)
            newest = recovered.segments[-1].path
            wal._writer_io = await asyncio.to_thread(SegmentWriter, wal.directory, newest)
        except BaseException:
            os.close(wal._lock_fd)
            raise
        wal._segments = [LogSegment(s.seq, s.first_lsn, s.path, s.size)
                         for s in recovered.segments]
        wal._checkpoints = {s.seq: list(s.checkpoints) for s in recovered.segments}
        wal._adopt_tail(
            recovered.crc, recovered.last_lsn, recovered.last_epoch, recovered.tail_entries
        )
        wal._io_thread = WalWriterThread(wal._loop)
        wal._writer = wal._loop.create_task(wal._run_writer())
        return wal

    def _adopt_tail(self, crc: int, last_lsn: int, epoch: int, entries: int) -> None:
        """Make the end of the newest segment the append point."""
        tail = self._segments[-1]
        self._crc = crc
        self._tail_size = tail.size
        self._tail_entries = entries
        self._next_seq = tail.seq + 1
        self.last_lsn = self._written_lsn = self._acked_lsn = self.durable_lsn = last_lsn
        self.last_epoch = epoch
        self._publish()

    def _publish(self) -> None:
        self._view = LogView(tuple(self._segments), self._acked_lsn, self._checkpoints)

    # ------------------------------------------------------------------------------ reading

    @property
    def first_lsn(self) -> int:
        base = self._segments[0].first_lsn - 1 if self._segments else 0
        return base + 1 if self.last_lsn > base else 0

    def read_from(self, lsn: int) -> Iterator[WalEntry]:
        """Acknowledged entries with ``entry.lsn >= lsn``, oldest first, read from the files.

        Raises ``LsnCompacted`` (at the call) when entries at or after ``lsn`` were removed,
        ``WalCorruption`` (while iterating) if a file turns out damaged. Blocking: callers run
        big reads in a thread. Do not interleave a long read with truncate_after/restart_at.
        """
        return self.read_wire_from(lsn, WalEntry.from_wire)

    def read_wire_from(self, lsn: int, decode: Callable[[list[Any]], T]) -> Iterator[T]:
        """``read_from`` with each entry's msgpack form ``[lsn, epoch, ts, mutations]`` passed
        to ``decode`` instead of built into a ``WalEntry`` (recovery's replay: issue 17)."""
        view = self._view
        if not view.segments:
            return iter(())
        base = view.segments[0].first_lsn - 1
        lsn = max(lsn, 1)
        if lsn <= base:
            raise LsnCompacted(f"lsn {lsn} was removed; the log starts at {base + 1}")
        return read_view(view, lsn, decode)

    # ------------------------------------------------------------------------------ writing

    def append_nowait(self, entry: WalEntry) -> asyncio.Future[None]:
        """Frame and queue ``entry`` now; the future resolves when it is durable per policy.

        Raises ``ValueError`` if ``entry.lsn != last_lsn + 1`` or its epoch is older than the
        log's, ``WalFailed`` if the log is closed, broken, or in the middle of a truncation."""
        self._check_appendable()
        self._check_next(entry, self.last_lsn, self.last_epoch)
        future: asyncio.Future[None] = self._loop.create_future()
        self._enqueue(entry, future)
        return future

    def append_batch_nowait(self, entries: Sequence[WalEntry]) -> asyncio.Future[None]:
        """``append_nowait`` for consecutive entries with one future, resolved when the last
        is durable (groups are written in order, so every earlier one is too).

        A replica appends a whole frame of its primary's entries at once and waits for the
        last: a future per entry was made, resolved and never looked at (issue 17). Every
        entry is checked before any is queued, so a bad one queues none of them."""
        self._check_appendable()
        if not entries:
            raise ValueError("an empty batch")
        lsn, epoch = self.last_lsn, self.last_epoch
        for entry in entries:
            self._check_next(entry, lsn, epoch)
            if len(payload_of(entry)) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"entry {entry.lsn} is over {MAX_PAYLOAD_BYTES} bytes")
            lsn, epoch = entry.lsn, entry.epoch
        future: asyncio.Future[None] = self._loop.create_future()
        last = len(entries) - 1
        for index, entry in enumerate(entries):
            self._enqueue(entry, future if index == last else None)
        return future

    def _check_appendable(self) -> None:
        self._check_usable()
        if self._maintenance:
            raise WalFailed("WAL is being truncated; append after it returns")

    @staticmethod
    def _check_next(entry: WalEntry, last_lsn: int, last_epoch: int) -> None:
        check_entry(entry)
        if entry.lsn != last_lsn + 1:
            raise ValueError(f"entry lsn {entry.lsn} does not follow {last_lsn}")
        if entry.epoch < last_epoch:
            raise ValueError(f"entry epoch {entry.epoch} is older than {last_epoch}")

    def _enqueue(self, entry: WalEntry, future: asyncio.Future[None] | None) -> None:
        """Frame a checked entry onto the CRC chain and queue it (rolling the segment over
        first when it would not fit)."""
        seed = self._crc
        frame, crc = encode_entry(entry, seed)
        if self._tail_entries and self._tail_size + len(frame) > self.options.segment_bytes:
            header = SegmentHeader(self._next_seq, entry.lsn, self.last_epoch, self._crc)
            head_frame, seed = encode_frame(RecordType.SEGMENT, header.encode(), 0)
            self._queue.append(header)
            self._checkpoints[header.seq] = []
            self._next_seq += 1
            self._tail_size, self._tail_entries = len(head_frame), 0
            frame, crc = encode_entry(entry, seed)
        checkpoints = self._checkpoints.get(self._next_seq - 1)
        if checkpoints is None:
            checkpoints = self._checkpoints[self._next_seq - 1] = []
        if not checkpoints or self._tail_size - checkpoints[-1].offset >= CHECKPOINT_BYTES:
            checkpoints.append(Checkpoint(entry.lsn, self._tail_size, seed))
        self._queue.append(_Append(frame, entry.lsn, future))
        self._crc = crc
        self._tail_size += len(frame)
        self._tail_entries += 1
        self.last_lsn = entry.lsn
        self.last_epoch = entry.epoch
        self._idle.clear()
        self._wakeup.set()

    async def append(self, entry: WalEntry) -> None:
        await self.append_nowait(entry)

    async def append_many(self, entries: Sequence[WalEntry]) -> None:
        futures = [self.append_nowait(entry) for entry in entries]
        if futures:
            await asyncio.gather(*futures)

    async def _run_writer(self) -> None:
        interval = self.options.fsync_interval_ms / 1000
        periodic = self.options.fsync is FsyncPolicy.INTERVAL
        while True:
            if not self._queue:
                self._idle.set()
                if self._closed:
                    return
                timeout = None
                if periodic and self._written_lsn > self.durable_lsn:
                    timeout = max(0.0, self._counters.last_sync + interval - time.monotonic())
                await self._wakeup.wait_at_most(timeout)
                self._wakeup.clear()
                # Let the rest of the loop iteration that queued this run first: the
                # replication senders woken by the same submit ship the entry before the
                # local write starts (and may block the loop), and writers woken in the same
                # iteration join the group.
                await asyncio.sleep(0)
            async with self._io_lock:
                items, self._queue = self._queue, []
                try:
                    if items:
                        await self._write_group(items)
                    if (
                        periodic
                        and self._written_lsn > self.durable_lsn
                        and time.monotonic() - self._counters.last_sync >= interval
                    ):
                        await self._sync_only()
                except Exception as exc:  # an I/O error, or a bug: never leave writers hanging
                    self._fail(exc, items)
                    return

    async def _write_group(self, items: list[_Append | SegmentHeader]) -> None:
        assert self._writer_io is not None
        sync = self.options.fsync is FsyncPolicy.ALWAYS
        appends = [item for item in items if isinstance(item, _Append)]
        parts = [item.frame if isinstance(item, _Append) else item for item in items]
        if failpoints.ARMED:  # a group ordered (and shipped to replicas), not yet durable here
            await failpoints.hit("wal_before_sync")
        if negative_controls.ENABLED:  # TEST ONLY (testing/negative_controls.py)
            await negative_controls.ack_before_wal_write(appends, lambda: self._queue)
        if self._placement.in_loop(parts):
            result = self._writer_io.write_group(parts, sync)
        else:
            result = await self._io_thread.run(self._writer_io.write_group, parts, sync)
        segments = self._segments
        segments[-1] = replace(segments[-1], size=segments[-1].size + result.written[0])
        for (header, path, size), nbytes in zip(result.created, result.written[1:], strict=True):
            segments.append(LogSegment(header.seq, header.first_lsn, path, size + nbytes))
        last = appends[-1].lsn
        self._written_lsn = last
        self._counters.note_group(len(appends), sum(result.written))
        if self.options.fsync is not FsyncPolicy.INTERVAL:
            self.durable_lsn = last
        if sync:
            self._counters.note_sync(result.sync_seconds, self.options.on_sync)
            self._placement.note_sync(result.sync_seconds)
        self._acked_lsn = last
        self._publish()
        for item in appends:
            future = item.future
            if future is not None and not future.done():
                future.set_result(None)

    async def _sync_only(self) -> None:
        assert self._writer_io is not None
        target = self._written_lsn
        seconds = await self._io_thread.run(self._writer_io.sync)
        self._counters.note_sync(seconds, self.options.on_sync)
        self.durable_lsn = max(self.durable_lsn, target)

    def _fail(self, exc: BaseException, items: list[_Append | SegmentHeader]) -> None:
        self._failed = exc
        log.error(
            "WAL write failed; the log accepts nothing more", extra=log_fields(error=str(exc))
        )
        error = WalFailed(f"WAL write failed: {exc}")
        for item in [*items, *self._queue]:
            if isinstance(item, _Append) and item.future is not None \
                    and not item.future.done():
                item.future.set_exception(error)
        self._queue = []
        self._idle.set()

    async def _drain(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._queue or not self._idle.is_set():
            if self._writer is None or self._writer.done():
                return
            await self._idle.wait()

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise WalFailed(f"WAL unusable after an I/O error: {self._failed}")
        if self._closed:
            raise WalFailed("WAL is closed")

    # -------------------------------------------------------------------------- maintenance

    async def truncate_after(self, lsn: int) -> None:
        """Drop every entry with an LSN above ``lsn`` (a replica rejoining drops the suffix it
        does not share with the primary). Durable on return. ``lsn`` below the oldest
        retained entry minus one raises ``LsnCompacted``."""
        self._check_usable()
        self._maintenance = True
        try:
            await self._drain()
            self._check_usable()
            if lsn >= self.last_lsn:
                return
            base = self._segments[0].first_lsn - 1
            if lsn < base:
                raise LsnCompacted(f"cannot keep up to lsn {lsn}: the log starts at {base + 1}")
            async with self._io_lock:
                await asyncio.to_thread(self._truncate_blocking, lsn)
        finally:
            self._maintenance = False

    def _truncate_blocking(self, lsn: int) -> None:
        assert self._writer_io is not None
        self._segments, self._checkpoints, scan = cut_after(
            self.directory, self._segments, self._checkpoints, lsn
        )
        self._writer_io.reopen(scan.path)
        self._adopt_tail(scan.crc, lsn, scan.last_epoch, scan.entries)
        log.info("WAL truncated", extra=log_fields(after_lsn=lsn, segment=scan.path.name))

    async def remove_before(self, lsn: int) -> int:
        """Delete whole segments all of whose entries are below ``lsn`` (never the active
        one). Returns how many were deleted."""
        self._check_usable()
        async with self._io_lock:
            removable = 0
            while (
                removable + 1 < len(self._segments)
                and self._segments[removable + 1].first_lsn <= lsn
            ):
                removable += 1
            if not removable:
                return 0
            doomed = self._segments[:removable]
            self._segments = self._segments[removable:]
            self._checkpoints = {s.seq: self._checkpoints.get(s.seq, []) for s in self._segments}
            self._publish()
            await asyncio.to_thread(unlink_oldest_first, self.directory, doomed)
        log.info(
            "WAL segments removed",
            extra=log_fields(count=removable, before_lsn=lsn, first_lsn=self.first_lsn),
        )
        return removable

    async def restart_at(self, next_lsn: int, epoch: int = 0) -> None:
        """Drop everything; the next append must be ``next_lsn`` (a replica that installed a
        snapshot at ``next_lsn - 1``). ``epoch`` is that snapshot's epoch (the log's
        ``last_epoch`` until the next append). Crash-safe: the new segment is flagged as a
        restart, so recovery finishes deleting older ones if the process dies midway."""
        if next_lsn < 1:
            raise ValueError(f"next_lsn must be at least 1, got {next_lsn}")
        self._check_usable()
        self._maintenance = True
        try:
            await self._drain()
            self._check_usable()
            async with self._io_lock:
                await asyncio.to_thread(self._restart_blocking, next_lsn, epoch)
        finally:
            self._maintenance = False

    def _restart_blocking(self, next_lsn: int, epoch: int) -> None:
        assert self._writer_io is not None
        segment, crc = create_restart_segment(self.directory, self._next_seq, next_lsn, epoch)
        old = self._segments
        self._segments = [segment]
        self._checkpoints = {segment.seq: []}
        self._writer_io.reopen(segment.path)
        self._adopt_tail(crc, next_lsn - 1, epoch, 0)
        unlink_oldest_first(self.directory, old)
        log.info("WAL restarted", extra=log_fields(next_lsn=next_lsn, epoch=epoch))

    # ----------------------------------------------------------------------------- the rest

    def segment_extents(self) -> list[tuple[int, int]]:
        """(first LSN, bytes) of each segment, oldest first: what byte retention weighs."""
        return [(s.first_lsn, s.size) for s in self._segments]

    def stats(self) -> WalStats:
        return self._counters.stats(len(self._segments), sum(s.size for s in self._segments))

    async def close(self) -> None:
        """Write and sync what is queued, stop the writer, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
        async with self._io_lock:
            writer_io, self._writer_io = self._writer_io, None
            if writer_io is None:
                return
            try:
                if self._failed is None and self._written_lsn > self.durable_lsn:
                    await asyncio.to_thread(writer_io.sync)
                    self.durable_lsn = self._written_lsn
            finally:
                writer_io.close()
                self._io_thread.close()  # idle now: nothing runs on it outside the lock
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = -1

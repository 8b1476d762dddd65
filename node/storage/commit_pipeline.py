"""The write path's ordering core: LSN assignment, WAL enqueue, a pending overlay, and apply.

A write goes through three stages, and this module is where they are kept in order:

1. **Ordered** (``submit``, synchronous): the entry gets the next LSN and is enqueued in the
   WAL with ``append_nowait``. Because nothing awaits between the caller's condition check
   and this call, two compare-and-swaps on one key can never both pass. The entry's effects
   go into the *overlay* (key -> newest not-yet-applied state), so the next writer's
   conditions see it even though no reader can yet.
2. **Committed**: the WAL future resolves (the entry is durable; group commit lets many
   writers share one fsync) and then the *commit gate* is awaited.
3. **Applied**: a single applier task applies entries to the engine strictly in LSN order
   and only then releases the writer, so a read never observes a write that is not durable
   (and, with a gate, not replicated).

A writer that needs a key's current state (a condition, the version a put replaces, a
session record) reads the overlay, then the engine. An engine read may suspend (SQLite:
aiosqlite's thread), and an entry applied meanwhile would normally leave the overlay, so the
engine's answer (taken before it) could be older than the truth with nothing left to say so.
Instead of reading again whenever anything was applied (which, under write load, could read
again and again: issue 12's probe saw puts wait 212 ms there), an entry applied while an
engine read is in flight stays in the overlay until every read that started before it has
finished (``_retired``). So after one engine read, the overlay holds every write to the key
ordered since the read began, applied or not, and overlay-then-engine is the key's state in
write order: one round, whatever the write load (``CommitPipeline.current_many``).

The commit gate is the seam for replication. It is an optional ``async (entry) -> None``
awaited for each entry after local durability and before the entry is applied or
acknowledged. Without one (a standalone node, or write concern "one"), local durability
commits. Replication installs a gate that waits until a majority of the shard holds the LSN
(it is awaited in LSN order, so it can simply wait for "majority acknowledged >= lsn").
A gate that raises fails the pipeline: the entry is in the local log but its fate in the
cluster is unknown, so the node must stop accepting writes and re-synchronise (a new primary
decides), never pretend the write did not happen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shardkv.cluster.errors import OutcomeUnknown, StorageFailed, Unavailable
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.engines.engine import Engine, StoredItem
from shardkv.node.wal.record import Mutation, MutationKind, WalEntry
from shardkv.node.wal.wakeup import Wakeup
from shardkv.node.wal.write_ahead_log import WalFailed, WriteAheadLog

logger = logging.getLogger(__name__)

CommitGate = Callable[[WalEntry], Awaitable[None]]
Clock = Callable[[], float]

# The write concern of the write being submitted ("majority" or "one"), set by the operation
# layer around a Store call: an entry submitted under "one" passes ``local_gate`` instead of
# ``gate`` (still in LSN order, so it waits for the majority of any entry before it).
WRITE_CONCERN: contextvars.ContextVar[str] = contextvars.ContextVar(
    "shardkv_write_concern", default="majority")


@dataclass(slots=True)
class _InFlight:
    entry: WalEntry
    durable: asyncio.Future[None]
    applied: asyncio.Future[int] | None  # None: a replicated batch's earlier entry
    local: bool = False  # write concern "one"


class CommitPipeline:
    """Owns ``last_lsn`` and the order of entries from submission to application."""

    def __init__(
        self,
        wal: WriteAheadLog,
        engine: Engine,
        *,
        epoch: int,
        clock: Clock,
        gate: CommitGate | None = None,
    ) -> None:
        self._wal = wal
        self._engine = engine
        self._clock = clock
        self.epoch = epoch
        self.gate = gate
        self.local_gate: CommitGate | None = None
        # Called with each entry as it is ordered (the replication stream ships it at once,
        # in parallel with the local fsync).
        self.on_submit: Callable[[WalEntry], None] | None = None
        # Called with each entry right after it is applied, in LSN order with no await in
        # between (the watch hub: node/watch/watch_hub.py). It must not raise or block.
        self.on_apply: Callable[[WalEntry], None] | None = None
        self.last_lsn = max(wal.last_lsn, engine.applied_lsn)
        # key -> (lsn of the newest in-flight write of it, that write's mutation). The state
        # after the write (a StoredItem, or None for a delete) is built only when a
        # conditional writer reads the key, not for every key of every entry submitted.
        self._overlay: dict[bytes, tuple[int, Mutation]] = {}
        # Engine reads in flight (token -> the LSN applied when it began), and the entries
        # applied since the oldest of them began, kept in the overlay until it ends (see the
        # module docstring). ``_generation`` changes when the overlay is cleared under a read.
        self._readers: dict[int, int] = {}
        self._next_reader = 0
        self._retired: collections.deque[WalEntry] = collections.deque()
        self._applied = engine.applied_lsn  # the last entry applied by this pipeline
        self._generation = 0
        self._queue: collections.deque[_InFlight] = collections.deque()
        # barrier() waiters: (the last LSN ordered when it was called, its future), in LSN
        # order; resolved once that LSN is applied, or the pipeline fails.
        self._barriers: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque())
        # Bound to the loop once: each lookup is a getpid() on Python 3.11 (node/wal/wakeup.py).
        self._loop = asyncio.get_running_loop()
        self._wakeup = Wakeup(self._loop)  # the applier's alone
        self._failure: BaseException | None = None
        self._failure_is_storage = False
        self._closing = False
        # Why writes are held (the log is being restarted under a primary that takes
        # writes, e.g. an online migration's LSN jump): refused as retryable meanwhile.
        self.held: str | None = None
        self._logged_bytes = 0
        self._applier = asyncio.create_task(self._apply_in_order(), name="store-applier")

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def failure(self) -> str | None:
        """Why writes are refused (for /v1/status), or None."""
        return None if self._failure is None else f"{type(self._failure).__name__}: " \
            f"{self._failure}"

    @property
    def storage_failure(self) -> str | None:
        """``failure`` when the disk is to blame (the log or the engine raised), or None.

        A commit gate that refuses (the node stopped being primary, lost its majority) also
        stops the pipeline, but only until the step-down drops the unacknowledged suffix
        and ``reset``s it: that is no reason to restart the node (``node/write_failure``).
        """
        return self.failure if self._failure_is_storage else None

    def take_logged_bytes(self) -> int:
        """Approximate bytes logged since the last call (what snapshot scheduling counts)."""
        logged, self._logged_bytes = self._logged_bytes, 0
        return logged

    def check_writable(self) -> None:
        if self._closing:
            raise Unavailable("the store is closing")
        if self.held is not None:
            raise Unavailable(self.held)
        if self._failure is not None:
            raise StorageFailed(
                f"the store stopped accepting writes after a log failure: {self._failure!r}",
                node_failed=True)

    async def current(self, key: bytes) -> StoredItem | None:
        """The key's newest state in write order (applied or not), for condition checks.
        Valid until the caller's next await: submit before one."""
        pending = self._overlay.get(key)
        if pending is not None:
            return _state_after(pending)
        return (await self._read_in_write_order((key,), single=True))[0]

    def live_version(self, key: bytes, now: float) -> int | None:
        """The version a write ordered now would replace (None: absent or expired at
        ``now``), in write order, without an await. Only when the engine has ``sync_reads``."""
        pending = self._overlay.get(key)
        if pending is None:
            return self._engine.live_version(key, now)
        lsn, m = pending
        if m.kind is MutationKind.PUT and (m.expires_at is None or m.expires_at > now):
            return lsn
        return None

    async def live_versions(self, keys: Sequence[bytes], now: float) -> list[int | None]:
        """``live_version`` of each key, for any engine (an engine read may suspend; the
        answer holds until the caller's next await, so it must submit before one)."""
        if self._engine.sync_reads:
            return [self.live_version(key, now) for key in keys]
        items = await self.current_many(keys)
        return [None if item is None or (item.expires_at is not None
                                         and item.expires_at <= now) else item.version
                for item in items]

    async def current_many(self, keys: Sequence[bytes]) -> list[StoredItem | None]:
        """Each key's newest state in write order (applied or not), read from the engine
        once (not at all when every key has a write in the overlay). Valid until the
        caller's next await: submit before one."""
        overlay = self._overlay
        if all(key in overlay for key in keys):
            return [_state_after(overlay[key]) for key in keys]
        return await self._read_in_write_order(keys, single=False)

    async def _read_in_write_order(self, keys: Sequence[bytes], *, single: bool
                                   ) -> list[StoredItem | None]:
        """The engine's answer for ``keys`` (``get`` of the one key when ``single``, else
        ``get_many``), with the overlay laid over it.

        While the engine read is in flight, entries the applier finishes stay in the overlay
        (``_retired``), so the overlay, looked at after the read with no await in between,
        holds every write ordered since the read began; a key it lacks was not written
        since, and the engine's answer for it, which reflects at least every entry applied
        before the read, is its state. Only a ``reset`` or a failure (the overlay cleared
        under the read) makes it read again, and neither repeats under write load."""
        while True:
            generation = self._generation
            token = self._next_reader
            self._next_reader += 1
            self._readers[token] = self._applied
            try:
                engine = self._engine
                items = [await engine.get(keys[0])] if single else await engine.get_many(keys)
                if self._generation == generation:
                    overlay = self._overlay
                    return [
                        item if (pending := overlay.get(key)) is None
                        else _state_after(pending)
                        for key, item in zip(keys, items, strict=True)
                    ]
            finally:
                del self._readers[token]
                if self._retired:
                    self._release_retired()

    def submit(self, mutations: Sequence[Mutation]) -> asyncio.Future[int]:
        """Order one entry now (no await): assign the LSN, enqueue it in the WAL, record its
        effects in the overlay. The returned future resolves to the LSN once applied."""
        self.check_writable()
        entry = WalEntry(self.last_lsn + 1, self.epoch, tuple(mutations), self._clock())
        return self.submit_entry(entry)

    def submit_entry(self, entry: WalEntry) -> asyncio.Future[int]:
        """Order an entry built elsewhere (a replica applying its primary's stream): it must
        carry exactly the next LSN."""
        self.check_writable()
        if entry.lsn != self.last_lsn + 1:
            raise ValueError(f"entry lsn {entry.lsn} is not the next lsn {self.last_lsn + 1}")
        try:
            durable = self._wal.append_nowait(entry)
        except WalFailed as exc:
            self._fail(exc)
            raise Unavailable(f"the write-ahead log is unusable: {exc}") from exc
        self.last_lsn = entry.lsn
        overlay = self._overlay
        lsn = entry.lsn
        size = 24
        for m in entry.mutations:
            overlay[m.key] = (lsn, m)
            size += len(m.key) + len(m.value) + 16
        self._logged_bytes += size
        applied: asyncio.Future[int] = self._loop.create_future()
        self._queue.append(_InFlight(entry, durable, applied, WRITE_CONCERN.get() == "one"))
        self._wakeup.set()
        if self.on_submit is not None:
            self.on_submit(entry)
        # The writer's alone (barrier() waits on futures of its own), so it is returned
        # unshielded: a writer cancelled while waiting cancels only its own wait; the entry
        # is ordered and is applied regardless. (A shield cost a future, two callbacks and
        # a loop iteration per write: issue 17.)
        return applied

    def submit_entries(self, entries: Sequence[WalEntry]) -> asyncio.Future[int]:
        """Order consecutive entries built elsewhere (a replica applying a frame of its
        primary's stream) with one WAL future and one applied future, for the last: the
        caller waits for the whole frame, so a future (and a shield) per entry was made and
        resolved for nobody (issue 17). The first must carry exactly the next LSN; the WAL
        checks every entry before it queues any."""
        self.check_writable()
        if not entries:
            raise ValueError("an empty batch")
        if entries[0].lsn != self.last_lsn + 1:
            raise ValueError(f"entry lsn {entries[0].lsn} is not the next lsn "
                             f"{self.last_lsn + 1}")
        try:
            durable = self._wal.append_batch_nowait(entries)
        except WalFailed as exc:
            self._fail(exc)
            raise Unavailable(f"the write-ahead log is unusable: {exc}") from exc
        overlay = self._overlay
        queue = self._queue
        on_submit = self.on_submit
        size = 0
        for entry in entries:
            lsn = entry.lsn
            size += 24
            for m in entry.mutations:
                overlay[m.key] = (lsn, m)
                size += len(m.key) + len(m.value) + 16
            queue.append(_InFlight(entry, durable, None))
        self.last_lsn = entries[-1].lsn
        self._logged_bytes += size
        applied: asyncio.Future[int] = self._loop.create_future()
        queue[-1].applied = applied
        self._wakeup.set()
        if on_submit is not None:
            for entry in entries:
                on_submit(entry)
        return applied

    async def barrier(self) -> None:
        """Wait until every entry ordered so far is applied (or the pipeline failed)."""
        if self._queue:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._barriers.append((self.last_lsn, waiter))
            await waiter

    async def _apply_in_order(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = queue[0]
            try:
                # Awaited directly (a shield costs two more loop iterations per write): only
                # the applier waits on it, and the applier is cancelled only by close().
                await head.durable
                gate = self.local_gate if head.local and self.local_gate else self.gate
                if gate is not None:
                    try:
                        await gate(head.entry)
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:
                        self._fail(exc, storage=False)
                        return
                await self._engine.apply(head.entry)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._fail(exc)
                return
            queue.popleft()
            if self._readers:
                self._retired.append(head.entry)  # an engine read in flight may need it
            else:
                self._forget(head.entry)
            self._applied = head.entry.lsn
            if self.on_apply is not None:
                try:
                    self.on_apply(head.entry)
                except Exception:
                    logger.exception("an apply listener failed; the write stands")
            applied = head.applied
            if applied is not None and not applied.done():
                applied.set_result(head.entry.lsn)
            if self._barriers:
                self._release_barriers(head.entry.lsn)

    def _release_barriers(self, lsn: int | None) -> None:
        """Resolve the barrier() waiters up to ``lsn`` (None: all of them)."""
        barriers = self._barriers
        while barriers and (lsn is None or barriers[0][0] <= lsn):
            waiter = barriers.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)

    def _release_retired(self) -> None:
        """Drop from the overlay the retired entries no engine read in flight still needs:
        those applied before the oldest read in flight began (that read's answer already
        reflects them)."""
        floor = min(self._readers.values(), default=None)
        retired = self._retired
        while retired and (floor is None or retired[0].lsn <= floor):
            self._forget(retired.popleft())

    def _forget(self, entry: WalEntry) -> None:
        overlay = self._overlay
        for m in entry.mutations:
            pending = overlay.get(m.key)
            if pending is not None and pending[0] == entry.lsn:
                del overlay[m.key]

    def _fail(self, exc: BaseException, *, storage: bool = True) -> None:
        self._failure = exc
        self._failure_is_storage = storage
        logger.error(
            "write pipeline failed; the store no longer accepts writes",
            extra=log_fields(error=repr(exc), last_lsn=self.last_lsn),
        )
        # Every entry still queued was ordered, is in the local log and may have been shipped:
        # a new primary may yet commit it. Never a definite failure (docs/protocol.md).
        error = OutcomeUnknown(f"the write was ordered but this node can no longer commit "
                               f"it ({exc!r}); it may or may not be applied")
        while self._queue:
            head = self._queue.popleft()
            if head.applied is not None and not head.applied.done():
                head.applied.set_exception(error)
            # Nobody else awaits these; retrieve their exceptions so none is reported unseen.
            head.durable.add_done_callback(_consume)
        self._clear_overlay()
        self._release_barriers(None)  # "applied or failed": barrier() waiters return

    def reset(self, last_lsn: int, epoch: int) -> None:
        """Start over after the log was rewritten underneath (a snapshot installed, or an
        unacknowledged suffix dropped): nothing may be in flight. Clears a failure, since
        the entries whose fate was unknown are gone from the log."""
        if self._queue:
            raise RuntimeError("cannot reset the write pipeline with entries in flight")
        self._clear_overlay()
        self._applied = self._engine.applied_lsn
        self._failure = None
        self._failure_is_storage = False
        self.last_lsn = last_lsn
        self.epoch = max(self.epoch, epoch)
        if self._applier.done():
            self._applier = asyncio.create_task(self._apply_in_order(), name="store-applier")

    def _clear_overlay(self) -> None:
        """Forget every pending and retired write; an engine read in flight reads again (its
        answer may predate a state the overlay no longer describes)."""
        self._overlay.clear()
        self._retired.clear()
        self._generation += 1

    async def close(self) -> None:
        """Refuse new writes, wait for those in flight, stop the applier."""
        self._closing = True
        await self.barrier()
        self._applier.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._applier


def _state_after(pending: tuple[int, Mutation]) -> StoredItem | None:
    """A key's state after its newest in-flight write (an overlay entry)."""
    lsn, m = pending
    if m.kind is MutationKind.PUT:
        return StoredItem(m.value, m.compressed, lsn, m.expires_at)
    return None


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()

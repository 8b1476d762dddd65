"""One watch's live side: a bounded buffer of events, filled by the hub, drained by the
WebSocket sender.

The hub offers every applied entry in LSN order. The subscriber keeps only the events its
filter matches, but remembers the LSN of every entry offered (``covered``), so a progress
notification can say "nothing you watch changed up to V" even when the entries were all
for other keys. The buffer is bounded in events and bytes: a watcher that cannot keep up is
marked ``overflowed`` (the session then ends it with ``SLOW_CONSUMER``; the client resumes
from its last version, reading the log) instead of the node holding its backlog.

Subscribers of one ``group`` (same filter, values flag and shard) see the same events: the hub
makes each entry's :class:`Batch` once per group (``batch_of``) and gives every one of them
the same object (``accept``), so the filter, the event dicts and their encoded frames are
made once, not once per watch (``event_frames.py``). The bounds still count per subscriber:
one that falls behind is cut off alone.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from shardkv.node.wal.record import WalEntry
from shardkv.node.watch.event_frames import Batch
from shardkv.node.watch.watch_filter import WatchFilter, entry_events, events_size

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_BYTES = 16 << 20


@dataclass(eq=False)
class Subscriber:
    """Live events for one watch, starting after ``after`` (the LSN its history ends at)."""

    watch: WatchFilter
    shard: str
    values: bool
    after: int
    max_events: int = DEFAULT_MAX_EVENTS
    max_bytes: int = DEFAULT_MAX_BYTES
    covered: int = 0
    overflowed: bool = False
    closed_reason: str | None = None
    # Set by the session while it sleeps caught up (live_sink.py): takes a batch straight to
    # the socket (True) instead of the buffer.
    sink: Callable[[Batch], bool] | None = None
    _batches: collections.deque[Batch] = field(default_factory=collections.deque)
    _events: int = 0
    _bytes: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.covered = self.after

    @property
    def buffered_events(self) -> int:
        return self._events

    @property
    def group(self) -> tuple[WatchFilter, bool, str]:
        """Subscribers with equal groups get the same events from every entry."""
        return (self.watch, self.values, self.shard)

    def wants(self, lsn: int) -> bool:
        """Whether an entry at ``lsn`` is still news to this subscriber."""
        return not self.overflowed and lsn > self.covered

    def batch_of(self, entry: WalEntry) -> Batch | None:
        """The entry's events for this subscriber's group (None: none match)."""
        events = entry_events(entry, self.watch, self.shard, values=self.values)
        return Batch(entry.lsn, events, events_size(events)) if events else None

    def offer(self, entry: WalEntry) -> None:
        """Take one applied entry (in LSN order, never twice), making its events here."""
        if self.wants(entry.lsn):
            self.accept(entry.lsn, self.batch_of(entry))

    def accept(self, lsn: int, batch: Batch | None) -> None:
        """Take the entry at ``lsn`` as its group's events (None: nothing this group
        watches); the hub calls this in LSN order. ``batch`` may be shared: it is only
        referenced, never changed. The session is woken only when there is something to
        send or to end: an entry nobody here watches only moves ``covered``, which the
        next progress frame reports."""
        if self.overflowed or lsn <= self.covered:
            return
        self.covered = lsn
        if batch is None:
            return
        sink = self.sink
        if sink is not None and not self._batches and self.closed_reason is None and sink(batch):
            return
        events = len(batch.events)
        if self._events + events > self.max_events or \
                self._bytes + batch.size > self.max_bytes:
            self.overflowed = True
            self._batches.clear()
            self._events = self._bytes = 0
        else:
            self._batches.append(batch)
            self._events += events
            self._bytes += batch.size
        self._wakeup.set()

    def poke(self) -> None:
        """Wake the session (the commit limit moved): it may now send what it held."""
        self._wakeup.set()

    async def wait_poke(self, within: float) -> None:
        """Until the next poke, offer or close, or ``within`` seconds, whatever is buffered
        (the session is waiting for the commit limit, not for events)."""
        self._wakeup.clear()
        if self.closed_reason is not None:
            return
        await self._sleep(within)

    def close(self, reason: str) -> None:
        """End the watch from the node's side (the store was reset, the node stops)."""
        if self.closed_reason is None:
            self.closed_reason = reason
        self._wakeup.set()

    def take(self) -> tuple[list[Batch], int]:
        """Everything buffered, oldest first, and the LSN it covers (every matching event
        up to it is in the batches); the buffer is empty after. Only that LSN, once the
        batches are sent, may be reported as progress: ``covered`` may already be ahead,
        with events still buffered."""
        batches = list(self._batches)
        self._batches.clear()
        self._events = self._bytes = 0
        self._wakeup.clear()
        return batches, self.covered

    async def wait(self, within: float) -> None:
        """Until something was offered or the watch was closed, or ``within`` seconds."""
        if self._batches or self.overflowed or self.closed_reason is not None:
            return
        await self._sleep(within)

    async def _sleep(self, within: float) -> None:
        """Wait for the wakeup or ``within`` seconds. ``asyncio.timeout``, not ``wait_for``:
        on Python 3.11 ``wait_for`` wraps the wait in a new task, a task and two loop turns
        per watch per entry at fan-out."""
        try:
            async with asyncio.timeout(within):
                await self._wakeup.wait()
        except TimeoutError:
            pass

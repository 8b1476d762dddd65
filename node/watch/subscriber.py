"""One watch's live side: a bounded buffer of events, filled by the hub, drained by the
WebSocket sender.

The hub offers every applied entry in LSN order. The subscriber keeps only the events its
filter matches, but remembers the LSN of every entry offered (``covered``), so a progress
notification can say "nothing you watch changed up to V" even when the entries were all
for other keys. The buffer is bounded in events and bytes: a watcher that cannot keep up is
marked ``overflowed`` (the session then ends it with ``SLOW_CONSUMER``; the client resumes
from its last version, reading the log) instead of the node holding its backlog.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any

from shardkv.node.wal.record import WalEntry
from shardkv.node.watch.watch_filter import WatchFilter, entry_events, events_size

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_BYTES = 16 << 20


@dataclass(slots=True)
class Batch:
    """The events of one entry (never split across frames: the resume point is an entry)."""

    version: int
    events: list[dict[str, Any]]
    size: int


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
    _batches: collections.deque[Batch] = field(default_factory=collections.deque)
    _events: int = 0
    _bytes: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.covered = self.after

    @property
    def buffered_events(self) -> int:
        return self._events

    def offer(self, entry: WalEntry) -> None:
        """Take one applied entry (the hub calls this in LSN order, never twice)."""
        if self.overflowed or entry.lsn <= self.covered:
            return
        self.covered = entry.lsn
        events = entry_events(entry, self.watch, self.shard, values=self.values)
        if events:
            size = events_size(events)
            if self._events + len(events) > self.max_events or \
                    self._bytes + size > self.max_bytes:
                self.overflowed = True
                self._batches.clear()
                self._events = self._bytes = 0
            else:
                self._batches.append(Batch(entry.lsn, events, size))
                self._events += len(events)
                self._bytes += size
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
        try:
            await asyncio.wait_for(self._wakeup.wait(), within)
        except TimeoutError:
            pass

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
        try:
            await asyncio.wait_for(self._wakeup.wait(), within)
        except TimeoutError:
            pass

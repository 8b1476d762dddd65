"""When a replica stream has been quiet long enough to need a heartbeat.

An idle primary sends each replica a heartbeat every ``heartbeat_s`` (freshness for replica
reads, lease grants: ``docs/replication.md``). The sender used to wait for new entries inside
a timeout, which under load armed and cancelled a timer for every frame. This timer is armed
once per quiet interval instead: ``sent`` only notes the time, and when the timer fires early
(a frame went out since it was set) it sets itself again for the rest of the interval.
"""

from __future__ import annotations

import asyncio

from shardkv.node.wal.wakeup import Wakeup


class HeartbeatTimer:
    """Sets ``due`` and ``wakeup`` once ``interval`` has passed without a frame sent."""

    __slots__ = ("_handle", "_interval", "_last_sent", "_loop", "_wakeup", "due")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float,
                 wakeup: asyncio.Event | Wakeup) -> None:
        self._loop = loop
        self._interval = interval
        self._wakeup = wakeup
        self.due = False
        self._last_sent = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            self._last_sent + interval, self._fire)

    def sent(self) -> None:
        """A frame went out now: the next heartbeat is due ``interval`` from here."""
        self.due = False
        self._last_sent = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(self._last_sent + self._interval, self._fire)

    def _fire(self) -> None:
        when = self._last_sent + self._interval
        if when > self._loop.time():
            self._handle = self._loop.call_at(when, self._fire)
            return
        self._handle = None
        self.due = True
        self._wakeup.set()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

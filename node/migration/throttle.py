"""An adaptive rate limit for the bulk copy: it backs off while the source's event loop is late.

Why the loop's lateness: on a source primary a copy batch and a foreground request share one
event loop (reading, hashing and encoding the batch), and on a small machine the target's
import competes for the same cores. Either way, what a foreground request feels first is a
loop that comes back to it late; a timer that wakes late measures exactly that, including the
time the OS did not run the process at all. TiKV and CockroachDB rate-limit snapshots with a
fixed byte rate; a fixed rate is too slow for an idle cluster and too fast for a loaded one,
so this one adapts, AIMD like TCP: before each bulk batch the copy waits ``delay``; the delay
doubles (from ``STEP_S``) when the worst lateness of the last ``WINDOW_S`` is above the
target, and shrinks by ``STEP_S`` when it is below. The WAL tail is never throttled: it must
keep up with the source's writes, or the fence would never come.

``SHARDKV_MIGRATION_MAX_LAG_MS`` sets the target (0 turns the throttle off).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from typing import Any

MAX_LAG_S = float(os.environ.get("SHARDKV_MIGRATION_MAX_LAG_MS") or 8.0) / 1000
TICK_S = 0.005
WINDOW_S = 0.25
STEP_S = 0.002
MAX_DELAY_S = 0.5


class LoopLagThrottle:
    """Measures the loop's lateness with a ticker and paces the bulk copy by it."""

    def __init__(self, max_lag_s: float = MAX_LAG_S) -> None:
        self.max_lag_s = max_lag_s
        self.delay_s = 0.0
        self.waited_s = 0.0  # total pause, for the status
        self.worst_lag_s = 0.0
        self._ticks: collections.deque[tuple[float, float]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.max_lag_s > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._tick(), name="copy-throttle")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.record(now, now - asked - TICK_S)

    def record(self, now: float, lag: float) -> None:
        """One tick: the loop woke ``lag`` seconds late at ``now`` (loop time)."""
        ticks = self._ticks
        ticks.append((now, lag))
        while ticks and ticks[0][0] < now - WINDOW_S:
            ticks.popleft()
        self._ticked.set()

    async def next_tick(self) -> None:
        """Wait for the ticker's next sample (what a test awaits instead of sleeping)."""
        self._ticked.clear()
        await self._ticked.wait()

    def recent_lag(self) -> float:
        """The worst lateness of the loop over the last ``WINDOW_S`` (seconds)."""
        return max((lag for _, lag in self._ticks), default=0.0)

    async def wait(self) -> None:
        """Called before each bulk batch: adjust the delay to the loop's lateness, wait it."""
        if not self.enabled:
            return
        lag = self.recent_lag()
        self.worst_lag_s = max(self.worst_lag_s, lag)
        if lag > self.max_lag_s:
            self.delay_s = min(MAX_DELAY_S, max(self.delay_s * 2, STEP_S))
        else:
            self.delay_s = max(0.0, self.delay_s - STEP_S)
        if self.delay_s:
            self.waited_s += self.delay_s
            await asyncio.sleep(self.delay_s)

    def status(self) -> dict[str, Any]:
        return {"max_lag_ms": round(self.max_lag_s * 1000, 1),
                "delay_ms": round(self.delay_s * 1000, 1),
                "waited_s": round(self.waited_s, 2),
                "worst_lag_ms": round(self.worst_lag_s * 1000, 1)}

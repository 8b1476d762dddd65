"""An adaptive rate limit for the bulk copy: it backs off while the source's event loop is late.

Why the loop's lateness: on a source primary a copy batch and a foreground request share one
event loop (reading, hashing and encoding the batch), and on a small machine the target's
import competes for the same cores. Either way, what a foreground request feels first is a
loop that comes back to it late; a timer that wakes late measures exactly that, including the
time the OS did not run the process at all. TiKV and CockroachDB rate-limit snapshots with a
fixed byte rate; a fixed rate is too slow for an idle cluster and too fast for a loaded one,
so this one adapts.

- **Target.** Before the copy, the ticker watches the loop under the foreground load alone
  (at least ``CALIBRATE_S``); each ``CALIBRATE_S`` of it gives the lateness of the latest
  tick but one in ten (``BASELINE_QUANTILE``: one pause, a full garbage collection of a
  large heap or a process starting beside it, is no baseline: as the worst tick it set
  targets of 250-500 ms on a loaded machine, and that source's copy was never paced), and
  the baseline is the lowest of those (up to ``BASELINE_WINDOWS`` of them, the latest):
  what the loop can do under this foreground. One half-second is no baseline (session 8,
  load 8-15: a source whose last window fell on a busy moment took 55-236 ms, so a target
  of 110-472 ms, and was paced neither in the copy nor in the clean-up; those runs had the
  worst tails), and neither is their median (one source was late for seconds before the
  copy, windows of 48-147 ms, then 14-18 ms just before it). The target is
  ``FACTOR`` times the baseline, never below ``SHARDKV_MIGRATION_MAX_LAG_MS`` (20 ms; 0
  turns the throttle off). Relative,
  because a busy shared machine is late by itself: an absolute target there would stop the
  copy, not protect anyone. (The goal it serves: foreground p99 within 3x of its baseline.)
- **Control**, before each bulk batch: the worst lateness of the last ``WINDOW_S`` above the
  target multiplies the pause before the batch by 1.5 (from ``STEP_S``), below it shrinks
  the pause by a quarter; so the copy runs flat out on an idle source and settles where the
  loop stays on time on a busy one, and a passing spike costs a few batches, not seconds.
- **Only with a foreground**: given the node's count of keyed requests (``activity``, the
  fence's), a batch is never paused when no request arrived in the last ``WINDOW_S``: a
  late loop then delays nobody but the copy. (Comparing the window's 90th percentile
  instead of its worst tick freed the copy too, and the foreground's get p99 went to 5.1x
  its baseline: the tail is what the foreground feels.)

The WAL tail is never throttled: it must keep up with the source's writes, or the fence
would never come.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable
from typing import Any

MAX_LAG_S = float(os.environ.get("SHARDKV_MIGRATION_MAX_LAG_MS") or 20.0) / 1000
FACTOR = 2.0
BASELINE_QUANTILE = 0.9
CALIBRATE_S = 0.5
BASELINE_WINDOWS = 20  # the last 10 s before the copy (an add waits seconds for its members)
TICK_S = 0.005
WINDOW_S = 0.25
STEP_S = 0.002
MAX_DELAY_S = 0.2


class LoopLagThrottle:
    """Measures the loop's lateness with a ticker and paces the bulk copy by it."""

    def __init__(self, max_lag_s: float = MAX_LAG_S,
                 activity: Callable[[], int] | None = None) -> None:
        self.floor_s = max_lag_s
        # A count of foreground requests (the fence's): pacing only while it moved in the
        # last ``WINDOW_S``; None: always (a foreground is assumed).
        self.activity = activity
        self._seen: tuple[int, float] = (-1, 0.0)  # (count, loop time it last changed)
        self.idle_batches = 0  # batches let through because there was no foreground
        self.max_lag_s = max_lag_s  # the target; raised by ``calibrate``
        self.baseline_lag_s: float | None = None
        self.delay_s = 0.0
        self.waited_s = 0.0  # total pause, for the status
        self.worst_lag_s = 0.0
        self._ticks: collections.deque[tuple[float, float]] = collections.deque()
        # Each CALIBRATE_S window's quantile until the baseline is set, and when the one in
        # progress closes (loop time).
        self._windows: collections.deque[float] = collections.deque(maxlen=BASELINE_WINDOWS)
        self._window_end = float("inf")
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()
        self._started = 0.0

    @property
    def enabled(self) -> bool:
        return self.floor_s > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._ticks.clear()  # a ticker started again (a new attempt) judges fresh ticks
            self._windows.clear()
            self._started = asyncio.get_running_loop().time()
            self._window_end = self._started + CALIBRATE_S
            self._task = asyncio.create_task(self._tick(), name="copy-throttle")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def calibrate(self) -> None:
        """Wait until the ticker has watched the loop for ``CALIBRATE_S`` since ``start``
        (the copy has not begun), then set the target from what it saw. Once: a later
        call keeps the first baseline (what the loop did with the copy running is no
        baseline)."""
        if self._task is None or self.baseline_lag_s is not None:
            return
        loop = asyncio.get_running_loop()
        while loop.time() < self._started + CALIBRATE_S:
            await self.next_tick()
        self.settle()

    def settle(self) -> None:
        """Set the baseline and the target from the windows watched so far: the lowest of
        their quantiles (the current one's if none has closed yet)."""
        windows = self._windows or [self.lag_quantile(CALIBRATE_S, BASELINE_QUANTILE)]
        self.baseline_lag_s = min(windows)
        self.max_lag_s = max(self.floor_s, FACTOR * self.baseline_lag_s)

    def adopt(self, baseline_lag_s: float) -> None:
        """Take a baseline measured earlier on this loop (the copy's, for the clean-up that
        follows it): ``calibrate`` then returns at once."""
        self.baseline_lag_s = baseline_lag_s
        self.max_lag_s = max(self.floor_s, FACTOR * baseline_lag_s)

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
        while ticks and ticks[0][0] < now - max(WINDOW_S, CALIBRATE_S):
            ticks.popleft()
        if now >= self._window_end and self.baseline_lag_s is None:
            self._windows.append(self.lag_quantile(CALIBRATE_S, BASELINE_QUANTILE))
            self._window_end = now + CALIBRATE_S
        self._ticked.set()

    async def next_tick(self) -> None:
        """Wait for the ticker's next sample."""
        self._ticked.clear()
        await self._ticked.wait()

    def recent_lag(self, window_s: float = WINDOW_S) -> float:
        """The worst lateness of the loop over the last ``window_s`` (seconds)."""
        if not self._ticks:
            return 0.0
        since = self._ticks[-1][0] - window_s
        return max((lag for at, lag in self._ticks if at >= since), default=0.0)

    def lag_quantile(self, window_s: float, quantile: float) -> float:
        """The lateness that ``quantile`` of the ticks of the last ``window_s`` did not
        exceed (seconds)."""
        if not self._ticks:
            return 0.0
        since = self._ticks[-1][0] - window_s
        lags = sorted(lag for at, lag in self._ticks if at >= since)
        return lags[min(len(lags) - 1, int(quantile * len(lags)))]

    async def wait(self) -> None:
        """Called before each bulk batch: adjust the pause to the loop's lateness, wait it."""
        if not self.enabled:
            return
        lag = self.recent_lag()
        self.worst_lag_s = max(self.worst_lag_s, lag)
        if not self._foreground():
            # Nobody to protect: a late loop delays only the copy itself. With no foreground
            # the copy spent 26-30 s of a 33-37-s copy here pausing (load 13: the machine
            # was late by itself, worst ticks of 113-121 ms against a 20-ms target).
            lag = 0.0
        if lag > self.max_lag_s:
            self.delay_s = min(MAX_DELAY_S, max(self.delay_s * 1.5, STEP_S))
        else:
            self.delay_s = self.delay_s * 0.75 if self.delay_s > STEP_S else 0.0
        if self.delay_s:
            self.waited_s += self.delay_s
            await asyncio.sleep(self.delay_s)

    def _foreground(self) -> bool:
        """Whether foreground requests reached this node in the last ``WINDOW_S``."""
        if self.activity is None:
            return True
        count, now = self.activity(), asyncio.get_running_loop().time()
        if count != self._seen[0]:
            self._seen = (count, now)
        if now - self._seen[1] <= WINDOW_S:
            return True
        self.idle_batches += 1
        return False

    def status(self) -> dict[str, Any]:
        baseline = self.baseline_lag_s
        return {"max_lag_ms": round(self.max_lag_s * 1000, 1),
                "baseline_lag_ms": None if baseline is None else round(baseline * 1000, 1),
                "baseline_windows_ms": [round(w * 1000, 1) for w in self._windows],
                "delay_ms": round(self.delay_s * 1000, 1),
                "waited_s": round(self.waited_s, 2),
                "worst_lag_ms": round(self.worst_lag_s * 1000, 1),
                "idle_batches": self.idle_batches}

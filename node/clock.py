"""The node's clock: where every time measurement of the lease, replication and TTLs comes
from, so that a test can skew it.

The chaos harness needs to ask "what if this node's clock is wrong?", and a clock read
straight from ``time.monotonic``/``time.time`` cannot be wrong on purpose. So the node reads
time from one process-wide :data:`NODE_CLOCK`, whose two readings are

- ``monotonic()``: for durations (the lease, heartbeat send times, replica staleness);
- ``wall()``: for what must mean the same on two machines (TTL expiry, replication
  timestamps).

Untouched, they return exactly ``time.monotonic()`` and ``time.time()``. A test (through the
test-only admin endpoint, ``node/testing/clock_admin.py``) can skew them in two ways:

- an **offset** of the wall clock: it reads ``offset`` more (or less) than real time, as
  after an NTP step or on a misconfigured host. The monotonic clock ignores it: a
  monotonic clock has no time of day to be wrong about;
- a **rate** ``r > 0``: from the moment it is set, both clocks advance ``r`` seconds per real
  second, like a drifting crystal. Changing the rate is continuous (the clocks carry on from
  the value they had), so the monotonic clock never goes backwards.

**Reset** returns the wall clock to real time at once (it jumps back, as a corrected host
clock would) but keeps what the monotonic clock gained or lost while skewed: it runs at the
real rate again from where it is. Jumping it back to ``time.monotonic()`` would break what
every user of a monotonic clock relies on: a lease renewed on a fast clock would expire
later than its duration, a replica's "fresh at" could lie in the future, durations could come
out negative.

Cost: a reading is one method call on one immutable state tuple (no lock), so it stays cheap
on the hot paths (a lease check per write, an expiry check per read). Changes are rare
(tests) and take a lock, so two concurrent changes cannot lose one another. Timers (sleeps,
timeouts) stay on the event loop's real clock: at the rates a test uses (a few percent) that
moves a 1 s heartbeat by tens of milliseconds; what matters is what the node *measures*.

Tests of the arithmetic give a ``NodeClock`` their own real-time sources, so no test sleeps.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

RealSource = Callable[[], float]
MAX_RATE = 100.0


class _Skew(NamedTuple):
    """The clock's state from ``since`` (real monotonic seconds) on:
    ``monotonic = mono_at_since + rate * (real_monotonic - since)`` and
    ``wall = real_wall + offset + drift_before + (rate - 1) * (real_monotonic - since)``.
    ``drift_before`` is what the wall clock gained or lost at earlier rates."""

    rate: float = 1.0
    since: float = 0.0
    mono_at_since: float = 0.0
    offset: float = 0.0
    drift_before: float = 0.0


@dataclass(frozen=True, slots=True)
class ClockReading:
    """What ``GET /admin/clock`` reports: the skew as set, and how far each clock is from
    real time now (``wall_error_ms`` includes the drift accumulated at rates other than 1)."""

    offset_ms: float
    rate: float
    wall_error_ms: float
    monotonic_error_ms: float

    @property
    def skewed(self) -> bool:
        return self.offset_ms != 0 or self.rate != 1.0 or self.wall_error_ms != 0

    def to_dict(self) -> dict[str, Any]:
        return {"offset_ms": self.offset_ms, "rate": self.rate,
                "wall_error_ms": self.wall_error_ms,
                "monotonic_error_ms": self.monotonic_error_ms, "skewed": self.skewed}


def check_rate(rate: object) -> float:
    """A usable rate: positive (a clock at rate 0 stands still, below 0 it runs backwards;
    neither is a monotonic clock) and at most ``MAX_RATE`` (beyond that no crystal drifts,
    and the readings would head for overflow)."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise ValueError(f"rate must be a finite number, got {rate!r}")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be > 0 and at most {MAX_RATE:g}, got {rate}")
    return float(rate)


def check_offset_ms(offset_ms: object) -> float:
    if (isinstance(offset_ms, bool) or not isinstance(offset_ms, int | float)
            or not math.isfinite(offset_ms)):
        raise ValueError(f"offset_ms must be a finite number, got {offset_ms!r}")
    return float(offset_ms)


class NodeClock:
    """See the module docstring. ``real_monotonic``/``real_wall`` are the real-time sources
    (tests pass fakes)."""

    def __init__(self, real_monotonic: RealSource = time.monotonic,
                 real_wall: RealSource = time.time) -> None:
        self._real_monotonic = real_monotonic
        self._real_wall = real_wall
        self._skew = _Skew()
        self._changing = threading.Lock()

    # -------------------------------------------------------------------------- readings

    def monotonic(self) -> float:
        """Seconds on the node's monotonic clock; never decreases."""
        skew = self._skew
        return skew.mono_at_since + skew.rate * (self._real_monotonic() - skew.since)

    def wall(self) -> float:
        """Seconds since the epoch on the node's wall clock."""
        skew = self._skew
        if skew.rate == 1.0:
            return self._real_wall() + skew.offset + skew.drift_before
        drift = (skew.rate - 1.0) * (self._real_monotonic() - skew.since)
        return self._real_wall() + skew.offset + skew.drift_before + drift

    def reading(self) -> ClockReading:
        skew = self._skew
        real_mono = self._real_monotonic()
        drift = skew.drift_before + (skew.rate - 1.0) * (real_mono - skew.since)
        mono = skew.mono_at_since + skew.rate * (real_mono - skew.since)
        return ClockReading(offset_ms=skew.offset * 1000, rate=skew.rate,
                            wall_error_ms=(skew.offset + drift) * 1000,
                            monotonic_error_ms=(mono - real_mono) * 1000)

    # --------------------------------------------------------------------------- changes

    def skew(self, *, offset_ms: float | None = None, rate: float | None = None) -> None:
        """Set the wall offset (replacing the previous one) and/or the rate (from now on);
        what is not given stays as it is. Raises ValueError on a bad value, changing
        nothing."""
        offset = None if offset_ms is None else check_offset_ms(offset_ms) / 1000
        new_rate = None if rate is None else check_rate(rate)
        with self._changing:
            current = self._rebased(self._skew)
            if new_rate is not None:
                current = current._replace(rate=new_rate)
            if offset is not None:
                current = current._replace(offset=offset)
            self._skew = current

    def reset(self) -> None:
        """Real time again: the wall clock jumps back to it; the monotonic clock keeps what
        it gained or lost and runs at the real rate from here (see the module docstring)."""
        with self._changing:
            self._skew = self._rebased(self._skew)._replace(rate=1.0, offset=0.0,
                                                            drift_before=0.0)

    def _rebased(self, skew: _Skew) -> _Skew:
        """The same clock with its anchor moved to now, so a rate change continues from the
        current readings instead of recomputing the past."""
        now = self._real_monotonic()
        elapsed = now - skew.since
        return skew._replace(since=now, mono_at_since=skew.mono_at_since + skew.rate * elapsed,
                             drift_before=skew.drift_before + (skew.rate - 1.0) * elapsed)


NODE_CLOCK = NodeClock()
"""The clock of this process. Callers take its bound methods (``NODE_CLOCK.monotonic``) as
their ``clock=``: they read the current skew at every call, whenever they were taken."""

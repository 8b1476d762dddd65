"""How much CPU the machine has left: the share of its cores that were idle lately.

Why the WAL asks (``group_placement.py``): an fdatasync on the event loop blocks the loop
for the sync's length. If every core is busy anyway (a 2x3 cluster on two cores), that is
no loss: the kernel runs another process meanwhile, and a thread hand-off would only add
wake-ups (measured: 1.14x the nodes' CPU per put). If a core sits idle (one node on a
machine of its own), the loop's blocked time is throughput lost: with the sync on the WAL's
thread the loop parses and orders the next group while the disk syncs (measured: 1.19x the
REST puts per second at the same CPU per put, fsync 0.5 ms, 16 entries a group). The
machine-wide idle time in ``/proc/stat`` tells the two apart.

It is read at most every ``SAMPLE_S`` and only when asked, so the cost is a clock read per
group and a small file read twice a second. Where ``/proc/stat`` is absent or unreadable
the answer is None and the WAL keeps its plain rule. Inside a container with a CPU quota
the host's idle time can overstate what the container may use; the choice is then only less
good, never unsafe: both placements write and sync the same bytes before anyone is answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SAMPLE_S = 0.5
PROC_STAT = "/proc/stat"


def read_cpu_times(path: str = PROC_STAT) -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs together, or None if unreadable. Idle includes
    iowait: a core waiting for the disk is free to run the loop."""
    try:
        with open(path, "rb") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != b"cpu":
        return None
    try:
        values = [float(v) for v in fields[1:9]]
    except ValueError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return idle, sum(values)


class SpareCpu:
    """Idle cores over the last sample window (``cores()``), refreshed when asked."""

    def __init__(self, *, read: Callable[[], tuple[float, float] | None] = read_cpu_times,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_count: int | None = None) -> None:
        self._read = read
        self._clock = clock
        self._cpus = cpu_count or os.cpu_count() or 1
        self._last = read()
        self._last_at = clock()
        self._cores: float | None = None

    def cores(self) -> float | None:
        """Idle cores (0 to the machine's count) in the last complete window; None until
        one window has passed or when ``/proc/stat`` cannot be read."""
        now = self._clock()
        if now - self._last_at >= SAMPLE_S:
            sample = self._read()
            last = self._last
            if sample is not None and last is not None and sample[1] > last[1]:
                idle = (sample[0] - last[0]) / (sample[1] - last[1])
                self._cores = max(0.0, min(1.0, idle)) * self._cpus
            elif sample is None:
                self._cores = None
            self._last, self._last_at = sample, now
        return self._cores

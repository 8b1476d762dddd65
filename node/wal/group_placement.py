"""Where the WAL writes a group: on the event loop, or in a worker thread.

Handing a group to a thread costs two wake-ups (the worker's, then the loop's), and on a busy
machine they take about as long as a small write and a fast disk's fdatasync together, on the
path of every write when one writer waits at a time. So a small group goes straight to the
disk while the disk syncs fast: the loop is then blocked for about one sync, which on such a
disk is what the hand-off costs. A group that opens a segment (file creation, directory sync)
or is large goes to the thread, and so does every group while syncs are slow: a disk that
stalls blocks the loop once, then the loop keeps serving while the thread waits on the disk,
until enough fast syncs have brought the average back down.

A group of several appends also goes to the thread when the machine has a core to spare
(``spare_cpu.py``): the loop then parses and orders the next group while the disk syncs this
one, instead of sitting blocked for the sync (session 9, one node with fsync always under
wrk: 1.19x the puts per second at the same CPU per put). When every core is busy (a 2x3
cluster on two cores) the blocked loop costs nothing, the kernel runs another process, and
the hand-off's wake-ups would cost 1.14x the CPU per put: those groups stay on the loop. A
single append (one writer waiting) stays on the loop either way: there is nothing to overlap.

``SHARDKV_WAL_IN_LOOP`` is a benchmark's switch (``bench.cost_bench --ab wal-in-loop`` and
``--ab wal-overlap``), not an operator's: ``0`` (or ``off``/``false``/``no``) sends every
group to the thread, ``1`` (``on``/``true``/``yes``) keeps the rule without the spare-CPU
overlap, unset or ``auto`` is the default described here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shardkv.node.wal.spare_cpu import SpareCpu

# A group is written on the event loop while the log's syncs typically (a moving average that
# gives the newest sync 1/SYNC_AVERAGE_WEIGHT) take at most IN_LOOP_SYNC_SECONDS and the group
# is at most IN_LOOP_GROUP_BYTES; otherwise in a worker thread.
IN_LOOP_SYNC_SECONDS = 0.002
IN_LOOP_GROUP_BYTES = 256 << 10
SYNC_AVERAGE_WEIGHT = 8
# A group of at least OVERLAP_MIN_PARTS appends goes to the thread while at least
# OVERLAP_SPARE_CORES of the machine's cores were idle in the last sample.
OVERLAP_MIN_PARTS = 2
OVERLAP_SPARE_CORES = 0.5
OFF_VALUES = ("0", "off", "false", "no")
ON_VALUES = ("1", "on", "true", "yes")


class GroupPlacement:
    """The moving average of sync times, the machine's spare CPU, and the decision they
    drive."""

    def __init__(self, spare_cpu: SpareCpu | None = None) -> None:
        self.typical_sync_s = 0.0
        mode = os.environ.get("SHARDKV_WAL_IN_LOOP", "auto").strip().lower()
        if mode not in OFF_VALUES + ON_VALUES + ("auto", ""):
            raise ValueError(f"SHARDKV_WAL_IN_LOOP must be auto, 1/on or 0/off, got {mode!r}")
        self.allowed = mode not in OFF_VALUES
        self._spare = None if mode in ON_VALUES else (spare_cpu or SpareCpu())
        self.overlapped = 0  # groups sent to the thread to overlap the loop's work (tests)

    def in_loop(self, parts: Sequence[object]) -> bool:
        """Whether to write these parts (frames, or segment headers that open a file) on the
        event loop."""
        if self.typical_sync_s > IN_LOOP_SYNC_SECONDS or not self.allowed:
            return False
        if len(parts) >= OVERLAP_MIN_PARTS and self._spare is not None:
            spare = self._spare.cores()
            if spare is not None and spare >= OVERLAP_SPARE_CORES:
                self.overlapped += 1
                return False
        size = 0
        for part in parts:
            if not isinstance(part, bytes):
                return False  # a segment header: a file to create and a directory to sync
            size += len(part)
        return size <= IN_LOOP_GROUP_BYTES

    def note_sync(self, seconds: float) -> None:
        self.typical_sync_s += (seconds - self.typical_sync_s) / SYNC_AVERAGE_WEIGHT

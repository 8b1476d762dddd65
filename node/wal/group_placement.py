"""Where the WAL writes a group: on the event loop, or in a worker thread.

Handing a group to a thread costs two wake-ups (the worker's, then the loop's), and on a busy
machine they take about as long as a small write and a fast disk's fdatasync together, on the
path of every write when one writer waits at a time. So a small group goes straight to the
disk while the disk syncs fast: the loop is then blocked for about one sync, which on such a
disk is what the hand-off costs. A group that opens a segment (file creation, directory sync)
or is large goes to the thread, and so does every group while syncs are slow: a disk that
stalls blocks the loop once, then the loop keeps serving while the thread waits on the disk,
until enough fast syncs have brought the average back down.

``SHARDKV_WAL_IN_LOOP=0`` (or ``off``/``false``/``no``) sends every group to the thread: a
benchmark's switch (``bench.cost_bench --ab wal-in-loop``), not an operator's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# A group is written on the event loop while the log's syncs typically (a moving average that
# gives the newest sync 1/SYNC_AVERAGE_WEIGHT) take at most IN_LOOP_SYNC_SECONDS and the group
# is at most IN_LOOP_GROUP_BYTES; otherwise in a worker thread.
IN_LOOP_SYNC_SECONDS = 0.002
IN_LOOP_GROUP_BYTES = 256 << 10
SYNC_AVERAGE_WEIGHT = 8
OFF_VALUES = ("0", "off", "false", "no")


class GroupPlacement:
    """The moving average of sync times, and the decision it drives."""

    def __init__(self) -> None:
        self.typical_sync_s = 0.0
        self.allowed = os.environ.get("SHARDKV_WAL_IN_LOOP", "1").lower() not in OFF_VALUES

    def in_loop(self, parts: Sequence[object]) -> bool:
        """Whether to write these parts (frames, or segment headers that open a file) on the
        event loop."""
        if self.typical_sync_s > IN_LOOP_SYNC_SECONDS or not self.allowed:
            return False
        size = 0
        for part in parts:
            if not isinstance(part, bytes):
                return False  # a segment header: a file to create and a directory to sync
            size += len(part)
        return size <= IN_LOOP_GROUP_BYTES

    def note_sync(self, seconds: float) -> None:
        self.typical_sync_s += (seconds - self.typical_sync_s) / SYNC_AVERAGE_WEIGHT

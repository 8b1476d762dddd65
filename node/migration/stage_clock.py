"""Where a migration's copy spends its time: seconds per stage, with the wall and CPU around.

A copy that moves keys slower than the machine could is waiting on something (a target's
acknowledgement, the throttle, the disk, another process on the same cores), and which one
decides what to change. So each side of the copy times its stages (a source: waiting for a
free slot in the pipeline, i.e. for acknowledgements, the throttle's pauses, hashing,
encoding; a target: decoding, filtering, the WAL and apply) and reports them in its status
(``GET /internal/migration/export`` and ``/import``) next to the wall time and the process
CPU of the same span: the wall minus the waits is the loop's own work, the wall minus the CPU
is the time the process was not running at all. A stage that never awaits (hashing,
encoding, filtering) also counts its thread's CPU (``timed``): on a machine shared with
other work its wall time includes whatever the OS ran instead. ``bench/reshard_bench.py``
prints them.

Stages are timed per batch or per chunk, never per key: two ``perf_counter`` calls per batch
of a thousand keys cost nothing measurable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StageClock:
    """Seconds and counts per named stage, and the wall and process CPU from ``start``."""

    __slots__ = ("_cpu0", "_cpu1", "_wall0", "_wall1", "counts", "cpu_seconds", "seconds")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._wall0: float | None = None
        self._cpu0 = 0.0
        self._wall1: float | None = None
        self._cpu1 = 0.0

    def start(self) -> None:
        """Open the span (a second call keeps the first start)."""
        if self._wall0 is None:
            self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def mark(self) -> None:
        """Close the span here (a later mark moves the end: a target marks every batch)."""
        self.start()
        self._wall1, self._cpu1 = time.perf_counter(), time.process_time()

    def add(self, stage: str, seconds: float, count: int = 1, cpu: float | None = None) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.counts[stage] = self.counts.get(stage, 0) + count
        if cpu is not None:
            self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + cpu

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Wall and thread CPU of a block that does not await."""
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - began, cpu=time.thread_time() - cpu)

    @contextmanager
    def waited(self, stage: str) -> Iterator[None]:
        """Wall time of a block that awaits (other tasks run meanwhile)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - began)

    def status(self) -> dict[str, Any]:
        wall = cpu = None
        if self._wall0 is not None:
            end_wall, end_cpu = self._wall1, self._cpu1
            if end_wall is None:
                end_wall, end_cpu = time.perf_counter(), time.process_time()
            wall, cpu = round(end_wall - self._wall0, 3), round(end_cpu - self._cpu0, 3)
        return {"wall_s": wall, "cpu_s": cpu,
                "stages_s": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
                "stages_cpu_s": {k: round(v, 3) for k, v in sorted(self.cpu_seconds.items())},
                "counts": dict(sorted(self.counts.items()))}

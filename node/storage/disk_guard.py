"""The low-disk guard: refuse writes with DISK_FULL before the WAL can meet ENOSPC.

A WAL append that fails with ENOSPC fails the log (the node stops taking writes until a
restart, ``write_ahead_log.py``), so the node must stop *before* the disk is full. Two levels:

- below ``2 * low_disk_bytes`` free, ask for a snapshot and a hard trim of the log (the
  retained tail shrinks to nothing behind the snapshot): usually that frees enough;
- below ``low_disk_bytes`` free, refuse every write with ``DISK_FULL`` (not retryable; the
  message names the directory and the bytes left) until space comes back.

Free space is read with ``statvfs`` at most every ``refresh_s`` or after ``refresh_bytes``
were logged, whichever comes first; in between it is estimated as the last reading minus
what was logged since (an over-estimate of use, so never late). Refused writes log nothing,
so the periodic refresh is also what notices that space came back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from shardkv.cluster.errors import DiskFull
from shardkv.cluster.structured_log import log_fields
from shardkv.node.storage.disk_usage import free_bytes

logger = logging.getLogger(__name__)

AUTO_LOW_DISK_CAP = 256 << 20
AUTO_LOW_DISK_FRACTION = 0.05


def auto_low_disk_bytes(total_bytes: int) -> int:
    """The default floor: 5% of the file system, at most 256 MiB."""
    return min(AUTO_LOW_DISK_CAP, int(total_bytes * AUTO_LOW_DISK_FRACTION))


class DiskGuard:
    """See the module docstring. ``low_bytes`` 0 turns the guard off (it still measures).
    ``on_low`` is called (at most once per ``refresh_s``) while free space is below twice
    the floor; it must not block (the snapshotter starts a background task)."""

    def __init__(
        self,
        path: Path,
        low_bytes: int,
        *,
        on_low: Callable[[], None],
        refresh_s: float = 0.25,
        refresh_bytes: int = 1 << 20,
        read_free: Callable[[Path], tuple[int, int]] = free_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.low_bytes = low_bytes
        self._on_low = on_low
        self._refresh_s = refresh_s
        self._refresh_bytes = refresh_bytes
        self._read_free = read_free
        self._clock = clock
        self._free = 0
        self._logged_since = 0
        self._read_at = float("-inf")
        self.refused = 0
        self.refusing = False
        self._refresh(notify=False)  # the owner is still being built: no callback yet

    @property
    def free_estimate(self) -> int:
        return self._free - self._logged_since

    def note_logged(self, nbytes: int) -> None:
        self._logged_since += nbytes

    def _refresh(self, *, notify: bool = True) -> None:
        self._free, _total = self._read_free(self.path)
        self._logged_since = 0
        self._read_at = self._clock()
        if notify and self.low_bytes and self._free < 2 * self.low_bytes:
            self._on_low()

    def check(self) -> None:
        """Raise ``DiskFull`` if a write now could bring the disk under the floor."""
        if not self.low_bytes:
            return
        if (
            self._logged_since >= self._refresh_bytes
            or self._clock() - self._read_at >= self._refresh_s
        ):
            self._refresh()
        free = self.free_estimate
        if free >= self.low_bytes:
            if self.refusing:
                self.refusing = False
                logger.warning("disk space is back above the floor; accepting writes",
                               extra=log_fields(path=str(self.path), free_bytes=free))
            return
        self.refused += 1
        if not self.refusing:
            self.refusing = True
            logger.error("disk nearly full; refusing writes",
                         extra=log_fields(path=str(self.path), free_bytes=free,
                                          floor_bytes=self.low_bytes))
        raise DiskFull(
            f"the disk holding {self.path} has {free} bytes free, under the node's floor of "
            f"{self.low_bytes} bytes: writes are refused until space is freed",
            path=str(self.path), free_bytes=free, floor_bytes=self.low_bytes,
        )

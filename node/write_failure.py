"""What a node does after its log failed (a full disk, a failed fsync).

The log refuses every write from the first I/O error on (``node/wal``): after a failed
fsync the page cache cannot be trusted, so the only safe way back is a fresh recovery from
the files. ``WriteFailureMonitor`` makes that visible and automatic:

- the node turns not-ready (``/ready`` 503, ``"status": "failed"``) and says why in
  ``/ready`` and ``/v1/status`` (``write_failure``); writes are answered ``UNAVAILABLE``
  with ``retryable: false`` (``StorageFailed``), so a client does not hammer this node;
  reads go on being served; a clustered node stops heartbeating, so that the coordinator
  fails its shard over to a replica instead of waiting for this disk;
- it probes the data directory until a write and an fsync succeed there again with room
  for a WAL segment, then stops gracefully and exits with ``EXIT_RECOVER`` (75,
  EX_TEMPFAIL) so that its supervisor (``shardkv up --supervise``, Kubernetes, systemd)
  restarts it: recovery then replays the log from disk, truncating a torn tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from shardkv.cluster.structured_log import log_fields

logger = logging.getLogger("shardkv.node.write_failure")

EXIT_RECOVER = 75
PROBE_BYTES = 1 << 20


def disk_usable(directory: Path, room_bytes: int) -> bool:
    """True when ``directory`` has ``room_bytes`` free and takes a small write and fsync."""
    try:
        stat = os.statvfs(directory)
        if stat.f_bavail * stat.f_frsize < room_bytes + PROBE_BYTES:
            return False
        probe = directory / ".write-probe.tmp"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        return True
    except OSError:
        return False


class WriteFailureMonitor:
    """Watches ``failure()``; once it is set, marks the node failed through ``on_failed``,
    then waits for the disk and calls ``on_recoverable`` (the node exits for a restart)."""

    def __init__(self, directory: Path, room_bytes: int, failure: Callable[[], str | None],
                 on_failed: Callable[[str], None], on_recoverable: Callable[[], None],
                 interval_s: float = 0.5) -> None:
        self.directory = directory
        self.room_bytes = room_bytes
        self.failure = failure
        self.on_failed = on_failed
        self.on_recoverable = on_recoverable
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:  # polled: the log has no callback for this, and a poll is cheap
            reason = self.failure()
            if reason is not None:
                break
            await asyncio.sleep(self.interval_s)
        logger.error("the write-ahead log failed: not ready, writes refused until the disk "
                     "is usable again", extra=log_fields(error=reason,
                                                         data_dir=str(self.directory)))
        self.on_failed(reason)
        while True:
            if await asyncio.to_thread(disk_usable, self.directory, self.room_bytes):
                break
            await asyncio.sleep(self.interval_s)
        logger.warning("the disk is usable again: stopping for a restart and a clean recovery "
                       f"(exit {EXIT_RECOVER})", extra=log_fields(data_dir=str(self.directory)))
        self.on_recoverable()

"""The WAL's counters: groups written, fsyncs and their time, and the slow-sync warning.

Kept out of the log's state machine because none of it decides anything the log does
(except ``last_sync``, which paces the ``interval`` policy): it is what metrics, the bench
(entries per group) and an operator (a slow-disk warning naming how much waited on the sync)
read. The ``on_sync`` hook is shielded here so that a failing metrics callback never
poisons the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shardkv.cluster.structured_log import log_fields
from shardkv.node.wal.model import WalStats

SLOW_SYNC_SECONDS = 1.0

log = logging.getLogger("shardkv.node.wal.write_ahead_log")


class WriteCounters:
    """Running totals of one log; ``stats()`` snapshots them."""

    __slots__ = ("appended_bytes", "appended_entries", "last_group", "last_sync", "max_group",
                 "sync_seconds", "syncs", "unsynced_bytes", "unsynced_entries")

    def __init__(self) -> None:
        self.appended_entries = 0
        self.appended_bytes = 0
        self.syncs = 0
        self.sync_seconds = 0.0
        self.last_sync = time.monotonic()
        self.last_group = 0
        self.max_group = 0
        self.unsynced_entries = 0  # written since the last fsync: what the next one covers
        self.unsynced_bytes = 0

    def note_group(self, entries: int, nbytes: int) -> None:
        """A group of ``entries`` entries (``nbytes`` bytes, headers included) was written."""
        self.appended_entries += entries
        self.appended_bytes += nbytes
        self.last_group = entries
        self.max_group = max(self.max_group, entries)
        self.unsynced_entries += entries
        self.unsynced_bytes += nbytes

    def note_sync(self, seconds: float,
                  on_sync: Callable[[float, int, int], None] | None) -> None:
        """An fsync took ``seconds``: count it, warn when slow, tell ``on_sync``."""
        self.syncs += 1
        self.sync_seconds += seconds
        self.last_sync = time.monotonic()
        entries, nbytes = self.unsynced_entries, self.unsynced_bytes
        self.unsynced_entries = self.unsynced_bytes = 0
        if seconds >= SLOW_SYNC_SECONDS:
            log.warning(
                "slow WAL fsync",
                extra=log_fields(seconds=round(seconds, 3), entries=entries, bytes=nbytes),
            )
        if on_sync is not None:
            try:
                on_sync(seconds, entries, nbytes)
            except Exception:  # a metrics hook must never poison the log
                log.exception("WAL on_sync callback failed")

    def stats(self, segments: int, nbytes: int) -> WalStats:
        return WalStats(
            segments=segments,
            bytes=nbytes,
            appended_entries=self.appended_entries,
            appended_bytes=self.appended_bytes,
            syncs=self.syncs,
            sync_seconds_total=self.sync_seconds,
            last_group_size=self.last_group,
            max_group_size=self.max_group,
        )

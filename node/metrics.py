"""The node's Prometheus metrics, on a registry of its own.

A per-node ``CollectorRegistry`` (never the process-global one) lets tests build several
node apps in one process. Request metrics are recorded on the hot path as plain counters,
folded into Prometheus families at scrape time (``op_metrics.py``); the store's figures
(keys, LSN, WAL size, snapshot age) are read at scrape time by a collector instead of being
pushed on every write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from shardkv.node.op_metrics import OpMetrics
from shardkv.node.storage.store_model import StoreStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latency: an in-memory read is tens of microseconds, a group-committed write a
# fraction of a millisecond to a few milliseconds, a slow disk tens to hundreds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
                 1.024, 2.048)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _StoreCollector(Collector):
    """Reads ``Store.stats()`` when Prometheus scrapes, so writes pay nothing for it."""

    def __init__(self, stats: Callable[[], StoreStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        gauges = [
            ("shardkv_keys", "Keys in the store (expired keys not yet swept included).",
             stats.keys),
            ("shardkv_last_lsn", "LSN of the last entry in the WAL.", stats.last_lsn),
            ("shardkv_applied_lsn", "LSN of the last entry applied to the engine.",
             stats.applied_lsn),
            ("shardkv_epoch", "Epoch the node serves in.", stats.epoch),
            ("shardkv_pending_writes", "Writes waiting for their group commit.",
             stats.pending_writes),
            ("shardkv_wal_bytes", "Bytes held in WAL segments on disk.", stats.wal.bytes),
            ("shardkv_wal_segments", "WAL segment files on disk.", stats.wal.segments),
            ("shardkv_wal_bytes_since_snapshot", "Bytes logged since the newest snapshot.",
             stats.wal_bytes_since_snapshot),
            ("shardkv_snapshot_lsn", "LSN of the newest snapshot (0 if none).",
             stats.snapshot_lsn or 0),
            ("shardkv_snapshots_taken", "Snapshots written since the node started.",
             stats.snapshots_taken),
            ("shardkv_expired_swept", "Expired keys deleted by the TTL sweeper since start.",
             stats.expired_swept),
            ("shardkv_client_sessions", "Client sessions this primary deduplicates writes "
             "for (0 on a replica).", stats.sessions),
            ("shardkv_dedup_hits", "Retried writes answered from their session record "
             "since start (not applied again).", stats.dedup_hits),
            ("shardkv_sessions_evicted", "Live client sessions dropped by the max_sessions "
             "bound since start (their retries are no longer recognised).",
             stats.sessions_evicted),
        ]
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=float(value))
        if stats.snapshot_age_s is not None:
            yield GaugeMetricFamily("shardkv_snapshot_age_seconds",
                                    "Seconds since the newest snapshot was written.",
                                    value=float(stats.snapshot_age_s))


class _DiskCollector(Collector):
    """Disk use and its guards, from ``disk_report`` at scrape time (a few stat calls)."""

    def __init__(self, report: Callable[[], dict[str, Any] | None]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self._report()
        if report is None:
            return
        by_kind = GaugeMetricFamily("shardkv_disk_bytes", "Bytes of the store's files on "
                                    "disk, by kind.", labels=["kind"])
        for kind in ("wal", "snapshot", "engine"):
            by_kind.add_metric([kind], float(report[f"{kind}_bytes"]))
        yield by_kind
        wal, snap, guard = report["wal"], report["snapshot"], report["guard"]
        gauges = [
            ("shardkv_disk_free_bytes", "Free bytes on the file system of the data directory.",
             report["free_bytes"]),
            ("shardkv_disk_total_bytes", "Size of the file system of the data directory.",
             report["total_bytes"]),
            ("shardkv_disk_floor_bytes", "Free space under which writes are refused "
             "(DISK_FULL); 0 when the guard is off.", guard["floor_bytes"]),
            ("shardkv_disk_refusing_writes", "1 while writes are refused for lack of disk.",
             int(guard["refusing"])),
            ("shardkv_disk_refused_writes", "Writes refused with DISK_FULL since start.",
             guard["refused"]),
            ("shardkv_wal_retained_entries", "Entries the WAL holds.",
             wal["retained_entries"]),
            ("shardkv_wal_retained_bytes", "Bytes the WAL holds.", wal["retained_bytes"]),
            ("shardkv_snapshot_bytes", "Size of the newest snapshot file.", snap["bytes"]),
            ("shardkv_snapshot_running", "1 while a snapshot is being written.",
             int(snap["running"])),
            ("shardkv_compaction_running", "1 while the engine is being compacted.",
             int(report["compaction"]["running"])),
            ("shardkv_compactions", "Engine compactions since start.",
             report["compaction"]["count"]),
        ]
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=float(value))


class NodeMetrics:
    """Every metric one node exports. ``registry`` is what ``/metrics`` renders.

    ``observe(op, outcome, seconds)`` counts one served operation and its latency: it is
    ``OpMetrics.observe`` itself (hot path: no call in between)."""

    observe: Callable[[str, str, float], None]

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ops = OpMetrics(LATENCY_BUCKETS)
        r.register(self.ops)
        self.observe = self.ops.observe
        self.fsyncs = Counter("shardkv_wal_fsyncs", "fdatasync calls on the WAL.", registry=r)
        self.fsync_latency = Histogram("shardkv_wal_fsync_duration_seconds", "Duration of one "
                                       "WAL sync.", buckets=FSYNC_BUCKETS, registry=r)
        self.group_entries = Histogram("shardkv_wal_group_commit_entries", "Entries made "
                                       "durable by one sync (group commit size).",
                                       buckets=GROUP_BUCKETS, registry=r)
        self.synced_bytes = Counter("shardkv_wal_synced_bytes", "Bytes made durable by WAL "
                                    "syncs.", registry=r)
        self.rpc_connections = Gauge("shardkv_rpc_connections", "Open /v1/rpc WebSockets.",
                                     registry=r)
        self.rpc_inflight = Gauge("shardkv_rpc_inflight", "rpc requests being served.",
                                  registry=r)
        self.bad_frames = Counter("shardkv_rpc_bad_frames", "rpc frames that could not be "
                                  "decoded as [id, op, args].", registry=r)
        self.recovery_seconds = Gauge("shardkv_recovery_duration_seconds", "Time the last "
                                      "start spent recovering the store.", registry=r)
        self.watch_sessions = Gauge("shardkv_watch_sessions", "Open /v1/watch WebSockets.",
                                    registry=r)
        self.watch_events = Counter("shardkv_watch_events", "Events sent to watches "
                                    "(counted when a watch ends).", registry=r)
        self.watch_slow_consumers = Counter("shardkv_watch_slow_consumers", "Watches cut "
                                            "off with SLOW_CONSUMER.", registry=r)
        self.maintenance = Counter("shardkv_admin_maintenance", "Snapshots and compactions "
                                   "asked for through the admin endpoints, by action.",
                                   ["action"], registry=r)
        self.ready = Gauge("shardkv_ready", "1 while the node serves its role.", registry=r)
        ProcessCollector(namespace="shardkv", registry=r)
        self._stats_source: Callable[[], StoreStats | None] = lambda: None
        r.register(_StoreCollector(lambda: self._stats_source()))
        self._disk_source: Callable[[], dict[str, Any] | None] = lambda: None
        r.register(_DiskCollector(lambda: self._disk_source()))

    def watch_store(self, stats: Callable[[], StoreStats | None]) -> None:
        """Export the store's figures, read from ``stats()`` at scrape time."""
        self._stats_source = stats

    def watch_disk(self, report: Callable[[], dict[str, Any] | None]) -> None:
        """Export disk use and guards, read from ``report()`` (``disk_report``) at scrape."""
        self._disk_source = report

    def on_wal_sync(self, seconds: float, entries: int, nbytes: int) -> None:
        """``WalOptions.on_sync``: one group commit reached the disk."""
        self.fsyncs.inc()
        self.fsync_latency.observe(seconds)
        self.group_entries.observe(entries)
        self.synced_bytes.inc(nbytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)

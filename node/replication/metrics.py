"""Replication's Prometheus metrics, read from the live objects when ``/metrics`` is scraped.

Per replica (on a primary): lag in entries and in seconds (how long the oldest entry it
lacks has existed), whether it is connected, snapshots sent. On a replica: staleness, lag
behind the primary's last LSN, stream reconnects, snapshots installed, suffixes truncated.
On every node: the lease (valid, seconds left), the commit LSN, and how many times this
node became primary. Nothing is recorded on the write path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shardkv.node.replication.shard_role import NodeReplication


class ReplicationCollector(Collector):
    def __init__(self, replication: NodeReplication) -> None:
        self.replication = replication

    def collect(self) -> Iterator[Metric]:
        repl = self.replication
        lease = repl.lease
        yield GaugeMetricFamily("shardkv_lease_valid",
                                "1 while this node holds a primary lease.",
                                value=1.0 if lease.valid and repl.primary is not None else 0.0)
        remaining = lease.remaining_s if repl.primary is not None else 0.0
        yield GaugeMetricFamily("shardkv_lease_remaining_seconds",
                                "Seconds left on the primary lease (0 if none).",
                                value=0.0 if math.isinf(remaining) else remaining)
        yield CounterMetricFamily("shardkv_promotions",
                                  "Times this node became primary since it started.",
                                  value=repl.failovers_seen)
        primary = repl.primary
        if primary is not None:
            yield GaugeMetricFamily("shardkv_replication_commit_lsn",
                                    "Highest LSN a majority of the shard holds.",
                                    value=primary.majority_lsn)
            yield CounterMetricFamily("shardkv_replication_stream_reconnects",
                                      "Replica streams re-established to this primary.",
                                      value=primary.reconnects)
            lag = GaugeMetricFamily("shardkv_replication_lag_entries",
                                    "Entries a replica has not acknowledged.",
                                    labels=["replica"])
            lag_s = GaugeMetricFamily("shardkv_replication_lag_seconds",
                                      "Age of the oldest entry a replica has not acknowledged.",
                                      labels=["replica"])
            connected = GaugeMetricFamily("shardkv_replication_replica_connected",
                                          "1 while the replica's stream is open.",
                                          labels=["replica"])
            for r in primary.replicas():
                lag.add_metric([r["node"]], r["lag_entries"])
                if not math.isnan(r["lag_ms"]):
                    lag_s.add_metric([r["node"]], r["lag_ms"] / 1000)
                connected.add_metric([r["node"]], 1.0 if r["connected"] else 0.0)
            yield lag
            yield lag_s
            yield connected
        replica = repl.replica
        if replica is not None:
            stats = replica.stats()
            staleness = stats["staleness_ms"]
            if staleness is not None:
                yield GaugeMetricFamily("shardkv_replica_staleness_seconds",
                                        "Time since this replica last held everything its "
                                        "primary had (from the primary's heartbeats).",
                                        value=staleness / 1000)
            yield GaugeMetricFamily("shardkv_replica_lag_entries",
                                    "Entries behind the primary's last LSN.",
                                    value=stats["lag_entries"])
            yield GaugeMetricFamily("shardkv_replica_connected",
                                    "1 while the stream from the primary is open.",
                                    value=1.0 if stats["connected"] else 0.0)
            yield CounterMetricFamily("shardkv_replica_stream_reconnects",
                                      "Times the stream from the primary was re-established.",
                                      value=stats["reconnects"])
            yield CounterMetricFamily("shardkv_replica_snapshots_installed",
                                      "Snapshots installed from the primary.",
                                      value=stats["snapshots_installed"])
            yield CounterMetricFamily("shardkv_replica_truncations",
                                      "Diverged log suffixes dropped on rejoining.",
                                      value=stats["truncations"])

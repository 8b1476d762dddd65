"""What the servers say about themselves during a cell: their Prometheus ``/metrics`` scraped
before and after, reduced to the few figures that explain a write's latency.

- shardkv: fsyncs, the mean fdatasync time, entries made durable per group commit, and the
  mean time the node spent serving one request (``shardkv_op_duration_seconds``), which
  against the generator's latency tells server time from transport and queueing.
- etcd: its WAL fsyncs and their mean time, and the mean bbolt backend commit.

Both systems time their own fsync, so "how long does a durable write wait for the disk" is
compared on equal terms, from the servers' own instruments.
"""

from __future__ import annotations

import urllib.error
import urllib.request

Samples = dict[str, float]

_WANTED_PREFIXES = (
    "shardkv_wal_fsync_duration_seconds_sum",
    "shardkv_wal_fsync_duration_seconds_count",
    "shardkv_wal_group_commit_entries_sum",
    "shardkv_wal_group_commit_entries_count",
    "shardkv_op_duration_seconds_sum",
    "shardkv_op_duration_seconds_count",
    "etcd_disk_wal_fsync_duration_seconds_sum",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_backend_commit_duration_seconds_sum",
    "etcd_disk_backend_commit_duration_seconds_count",
)


def parse_samples(text: str) -> Samples:
    """The wanted samples of a Prometheus text exposition, keyed by name (labels dropped,
    values of the same name summed: the op label of shardkv's latency is summed over ops)."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, rest = line.partition(" ")
        name = name_and_labels.partition("{")[0]
        if "}" in rest:  # a label value held a space: the value follows the closing brace
            rest = rest.rpartition("} ")[2]
        if name not in _WANTED_PREFIXES:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        samples[name] = samples.get(name, 0.0) + value
    return samples


def scrape(base_url: str, *, timeout_s: float = 5.0) -> Samples | None:
    """The wanted samples now, or None when the server has no readable ``/metrics``."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout_s) as r:
            return parse_samples(r.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _mean_ms(delta: Samples, prefix: str) -> float | None:
    count = delta.get(prefix + "_count", 0.0)
    return delta.get(prefix + "_sum", 0.0) / count * 1000 if count else None


def summarize(before: Samples | None, after: Samples | None) -> dict[str, float | None]:
    """Figures over the interval between two scrapes (empty when either is missing)."""
    if before is None or after is None:
        return {}
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    out: dict[str, float | None] = {}
    if "shardkv_wal_fsync_duration_seconds_count" in delta:
        groups = delta.get("shardkv_wal_group_commit_entries_count", 0.0)
        out["fsyncs"] = delta["shardkv_wal_fsync_duration_seconds_count"]
        out["fsync_mean_ms"] = _mean_ms(delta, "shardkv_wal_fsync_duration_seconds")
        out["entries_per_group"] = (
            delta.get("shardkv_wal_group_commit_entries_sum", 0.0) / groups if groups else None
        )
        out["server_op_mean_ms"] = _mean_ms(delta, "shardkv_op_duration_seconds")
    if "etcd_disk_wal_fsync_duration_seconds_count" in delta:
        out["fsyncs"] = delta["etcd_disk_wal_fsync_duration_seconds_count"]
        out["fsync_mean_ms"] = _mean_ms(delta, "etcd_disk_wal_fsync_duration_seconds")
        out["backend_commit_mean_ms"] = _mean_ms(delta, "etcd_disk_backend_commit_duration_seconds")
    return out

"""The storage node's configuration: its settings on the shared model (``cluster/settings.py``).

Sources, lowest precedence first: a TOML file (``--config FILE``; keys at the top level or
under a ``[node]`` table, with the shared ``[timing]`` table beneath), the environment
(``SHARDKV_DATA_DIR``, ``SHARDKV_LISTEN``, ...), then command-line flags. Every value is
checked here, before anything is opened or bound, so a mistake is reported as one clear
sentence (and ``shardkv node`` exits 2) instead of a stack trace half way through startup.
The timing contract (failover timeout, lease margin, write timeout) is the one the
coordinator reads too (``cluster/timing.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.cluster.limits import (
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    HARD_MAX_VALUE_BYTES,
    MAX_FRAME_BYTES,
)
from shardkv.cluster.settings import (
    ConfigError,
    Setting,
    choice,
    flag,
    integer,
    merge_sources,
    number,
    parse_listen,
    text,
    url_list,
)
from shardkv.cluster.timing import TIMING_SETTINGS, TimingContract
from shardkv.node.api.limits import ConnectionLimits
from shardkv.node.storage.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL_S

__all__ = ["ENGINES", "FSYNC_POLICIES", "ConfigError", "NodeConfig", "load_config",
           "parse_listen"]

ENGINES = ("memory", "sqlite")
FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_LISTEN = "127.0.0.1:7100"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to start. ``listen_port`` 0 asks the OS for a free port (the
    node logs the one it got)."""

    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 7100
    engine: str = "memory"
    fsync: str = "always"
    fsync_interval_ms: int = 100
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    coordinators: tuple[str, ...] = ()
    shard: str | None = None
    node_id: str | None = None
    snapshot_wal_bytes: int = 128 << 20
    # WAL segment size, and how many entries a snapshot leaves in the log for replicas a
    # little behind (fewer: less disk; more: fewer replicas reseeded from a snapshot).
    wal_segment_bytes: int = 64 << 20
    retain_wal_entries: int = 100_000
    # Disk use (node/storage/snapshots/retention.py, disk_guard.py): the WAL tail kept behind
    # a snapshot in bytes (None: the larger of 64 MiB and the last snapshot, capped by the
    # disk), a snapshot once WAL since the last reaches ratio x its size (at least the
    # minimum), snapshots kept, and the free-space floor under which writes are refused
    # (None: 5% of the disk, at most 256 MiB; 0: off).
    retain_wal_bytes: int | None = None
    snapshot_wal_ratio: float = 4.0
    snapshot_min_wal_bytes: int = 16 << 20
    keep_snapshots: int = 2
    low_disk_bytes: int | None = None
    # Client sessions (exactly-once writes, docs/exactly-once.md): how long a client's last
    # write is remembered, and how many clients a shard remembers at most.
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    max_sessions: int = DEFAULT_MAX_SESSIONS
    # Requests one rpc connection may have in flight before the node stops reading from it
    # (TCP backpressure then slows the client down instead of the node queueing without bound).
    max_inflight_per_connection: int = 1024
    # Key watches (docs/watch.md): each watch's live buffer on the node, in events and bytes
    # (a watcher further behind is cut off with SLOW_CONSUMER and resumes from the log), and
    # how long one frame may wait for a client that stopped reading before it is dropped.
    watch_buffer_events: int = 10_000
    watch_buffer_bytes: int = 16 << 20
    watch_send_timeout_s: float = 30.0
    # How long a graceful stop waits for requests in flight before closing connections.
    shutdown_grace_s: float = 10.0
    # Graceful handoff on SIGTERM (node/replication/handoff.py): how long a primary waits for
    # the coordinator leader to switch its shard to a replica before it stops anyway; 0
    # turns the handoff off. Keep it below the orchestrator's grace period (Kubernetes: 30 s).
    handoff_timeout_s: float = 8.0
    # Readiness of a replica (node/replication/readiness.py): caught up with its primary
    # within this many entries and this staleness.
    ready_max_lag_entries: int = 1000
    ready_max_staleness_ms: float = 2000.0
    log_level: str = "info"
    timing: TimingContract = field(default_factory=TimingContract)
    # Resource bounds against a client that is slow, greedy or hostile (node/api/limits.py).
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    max_connections: int = 4096
    max_connections_per_address: int = 256
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    max_pending_frame_bytes: int = 128 << 20
    # Continuous WAL archiving (docs/backup.md): where the committed log is copied (a
    # directory or s3://bucket/prefix; None: off) and how often (the recovery point).
    archive_to: str | None = None
    archive_interval_s: float = 10.0
    # The lean REST lane (node/api/lean_lane.py): GET/PUT of a key parsed and answered
    # without aiohttp's per-request objects; off: every request goes through aiohttp.
    lean_rest: bool = True

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            header_timeout_s=self.header_timeout_s, idle_timeout_s=self.idle_timeout_s,
            max_pending_frame_bytes=self.max_pending_frame_bytes)

    def stop_budget_s(self) -> float:
        """The whole graceful stop's bound (node/stop_budget.py): the handoff, the drain, and
        6 s for the rest; 24 s by default, below Kubernetes' 30 s grace period."""
        return self.handoff_timeout_s + self.shutdown_grace_s + 6.0

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def standalone(self) -> bool:
        """No coordinator: the node is the primary of a one-node shard."""
        return not self.coordinators


NODE_SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "SHARDKV_DATA_DIR"),
    Setting("listen", "SHARDKV_LISTEN"),
    Setting("engine", "SHARDKV_ENGINE"),
    Setting("fsync", "SHARDKV_FSYNC"),
    Setting("fsync_interval_ms", "SHARDKV_FSYNC_INTERVAL_MS"),
    Setting("max_value_bytes", "SHARDKV_MAX_VALUE_BYTES"),
    Setting("coordinator", "SHARDKV_COORDINATOR"),
    Setting("shard", "SHARDKV_SHARD"),
    Setting("node_id", "SHARDKV_NODE_ID"),
    Setting("snapshot_wal_bytes", "SHARDKV_SNAPSHOT_WAL_BYTES"),
    Setting("wal_segment_bytes", "SHARDKV_WAL_SEGMENT_BYTES"),
    Setting("retain_wal_entries", "SHARDKV_RETAIN_WAL_ENTRIES"),
    Setting("retain_wal_bytes", "SHARDKV_RETAIN_WAL_BYTES"),
    Setting("snapshot_wal_ratio", "SHARDKV_SNAPSHOT_WAL_RATIO"),
    Setting("snapshot_min_wal_bytes", "SHARDKV_SNAPSHOT_MIN_WAL_BYTES"),
    Setting("keep_snapshots", "SHARDKV_KEEP_SNAPSHOTS"),
    Setting("low_disk_bytes", "SHARDKV_LOW_DISK_BYTES"),
    Setting("session_ttl_s", "SHARDKV_SESSION_TTL_S"),
    Setting("max_sessions", "SHARDKV_MAX_SESSIONS"),
    Setting("max_inflight_per_connection", "SHARDKV_MAX_INFLIGHT_PER_CONNECTION"),
    Setting("watch_buffer_events", "SHARDKV_WATCH_BUFFER_EVENTS"),
    Setting("watch_buffer_bytes", "SHARDKV_WATCH_BUFFER_BYTES"),
    Setting("watch_send_timeout_s", "SHARDKV_WATCH_SEND_TIMEOUT_S"),
    Setting("shutdown_grace_s", "SHARDKV_SHUTDOWN_GRACE_S"),
    Setting("handoff_timeout_s", "SHARDKV_HANDOFF_TIMEOUT_S"),
    Setting("ready_max_lag_entries", "SHARDKV_READY_MAX_LAG_ENTRIES"),
    Setting("ready_max_staleness_ms", "SHARDKV_READY_MAX_STALENESS_MS"),
    Setting("log_level", "SHARDKV_LOG_LEVEL"),
    Setting("max_answer_bytes", "SHARDKV_MAX_ANSWER_BYTES"),
    Setting("max_connections", "SHARDKV_MAX_CONNECTIONS"),
    Setting("max_connections_per_address", "SHARDKV_MAX_CONNECTIONS_PER_ADDRESS"),
    Setting("header_timeout_s", "SHARDKV_HEADER_TIMEOUT_S"),
    Setting("idle_timeout_s", "SHARDKV_IDLE_TIMEOUT_S"),
    Setting("max_pending_frame_bytes", "SHARDKV_MAX_PENDING_FRAME_BYTES"),
    Setting("archive_to", "SHARDKV_ARCHIVE_TO"),
    Setting("archive_interval_s", "SHARDKV_ARCHIVE_INTERVAL_S"),
    Setting("lean_rest", "SHARDKV_LEAN_REST"),
    *TIMING_SETTINGS,
)


def load_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | str | None = None,
) -> NodeConfig:
    """Merge file < environment < flags (``None`` flags are unset) and validate the result.

    Raises ``ConfigError`` with a message that names the setting and what was wrong.
    """
    return build_config(merge_sources(NODE_SETTINGS, "node", flags, environ, config_file))


def _auto_bytes(name: str, raw: object) -> int | None:
    """A byte count, or None for "auto" (unset, or the word ``auto``)."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == "auto"):
        return None
    return integer(name, raw, minimum=0)


def build_config(values: Mapping[str, Any]) -> NodeConfig:
    """Validate raw settings (strings from the environment, typed values from TOML)."""
    if "data_dir" not in values:
        raise ConfigError("no data directory: pass --data-dir DIR (or set SHARDKV_DATA_DIR)")
    data_dir = Path(text("data_dir", values["data_dir"])).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data_dir {data_dir} exists and is not a directory")
    host, port = parse_listen(values.get("listen", DEFAULT_LISTEN))
    max_value = integer("max_value_bytes", values.get("max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
                     minimum=1)
    if max_value > HARD_MAX_VALUE_BYTES:
        raise ConfigError(
            f"max_value_bytes {max_value} is over the hard cap of {HARD_MAX_VALUE_BYTES} "
            f"bytes (16 MiB)"
        )
    coordinators = url_list("coordinator", values["coordinator"]) if values.get(
        "coordinator") else ()
    shard = text("shard", values["shard"]) if values.get("shard") is not None else None
    node_id = text("node_id", values["node_id"]) if values.get("node_id") is not None else None
    log_level = choice("log_level", values.get("log_level", "info"),
                        ("debug", "info", "warning", "error"))
    return NodeConfig(
        data_dir=data_dir,
        listen_host=host,
        listen_port=port,
        engine=choice("engine", values.get("engine", "memory"), ENGINES),
        fsync=choice("fsync policy", values.get("fsync", "always"), FSYNC_POLICIES),
        fsync_interval_ms=integer("fsync_interval_ms", values.get("fsync_interval_ms", 100),
                               minimum=1, maximum=60_000),
        max_value_bytes=max_value,
        coordinators=coordinators,
        shard=shard,
        node_id=node_id,
        snapshot_wal_bytes=integer("snapshot_wal_bytes", values.get("snapshot_wal_bytes",
                                                                  128 << 20), minimum=1 << 16),
        wal_segment_bytes=integer("wal_segment_bytes", values.get("wal_segment_bytes", 64 << 20),
                               minimum=4096, maximum=1 << 32),
        retain_wal_entries=integer("retain_wal_entries", values.get("retain_wal_entries",
                                                                  100_000), minimum=0),
        retain_wal_bytes=_auto_bytes("retain_wal_bytes", values.get("retain_wal_bytes")),
        snapshot_wal_ratio=number("snapshot_wal_ratio", values.get("snapshot_wal_ratio", 4.0),
                                  minimum=0.0),
        snapshot_min_wal_bytes=integer("snapshot_min_wal_bytes",
                                       values.get("snapshot_min_wal_bytes", 16 << 20),
                                       minimum=0),
        keep_snapshots=integer("keep_snapshots", values.get("keep_snapshots", 2), minimum=1,
                               maximum=1000),
        low_disk_bytes=_auto_bytes("low_disk_bytes", values.get("low_disk_bytes")),
        session_ttl_s=number("session_ttl_s", values.get("session_ttl_s",
                                                         DEFAULT_SESSION_TTL_S), minimum=1.0),
        max_sessions=integer("max_sessions", values.get("max_sessions", DEFAULT_MAX_SESSIONS),
                             minimum=1, maximum=10_000_000),
        max_inflight_per_connection=integer(
            "max_inflight_per_connection", values.get("max_inflight_per_connection", 1024),
            minimum=1, maximum=1 << 16),
        watch_buffer_events=integer("watch_buffer_events",
                                    values.get("watch_buffer_events", 10_000),
                                    minimum=16, maximum=10_000_000),
        watch_buffer_bytes=integer("watch_buffer_bytes", values.get("watch_buffer_bytes",
                                                                    16 << 20),
                                   minimum=1 << 16, maximum=1 << 32),
        watch_send_timeout_s=number("watch_send_timeout_s",
                                    values.get("watch_send_timeout_s", 30.0), minimum=0.1),
        shutdown_grace_s=number("shutdown_grace_s", values.get("shutdown_grace_s", 10.0),
                                minimum=0.0),
        handoff_timeout_s=number("handoff_timeout_s", values.get("handoff_timeout_s", 8.0),
                                 minimum=0.0, maximum=600.0),
        ready_max_lag_entries=integer("ready_max_lag_entries",
                                      values.get("ready_max_lag_entries", 1000), minimum=0),
        ready_max_staleness_ms=number("ready_max_staleness_ms",
                                      values.get("ready_max_staleness_ms", 2000.0),
                                      minimum=1.0),
        log_level=log_level,
        timing=TimingContract.from_values(values),
        max_answer_bytes=integer("max_answer_bytes", values.get(
            "max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES), minimum=1 << 16,
            maximum=MAX_FRAME_BYTES),
        max_connections=integer("max_connections", values.get("max_connections", 4096),
                                minimum=1),
        max_connections_per_address=integer("max_connections_per_address", values.get(
            "max_connections_per_address", 256), minimum=1),
        header_timeout_s=number("header_timeout_s", values.get("header_timeout_s", 10.0),
                                minimum=0.1),
        idle_timeout_s=number("idle_timeout_s", values.get("idle_timeout_s", 75.0),
                              minimum=0.1),
        max_pending_frame_bytes=integer("max_pending_frame_bytes", values.get(
            "max_pending_frame_bytes", 128 << 20), minimum=MAX_FRAME_BYTES),
        archive_to=text("archive_to", values["archive_to"]) if values.get("archive_to")
        else None,
        archive_interval_s=number("archive_interval_s", values.get("archive_interval_s", 10.0),
                                  minimum=0.05, maximum=3600.0),
        lean_rest=flag("lean_rest", values.get("lean_rest", True)),
    )

"""The Store's vocabulary: its configuration and the values its operations return.

Kept apart from ``store.py`` so that callers (the rpc layer, replication, tests) can name these
types without importing the machinery, and so the Store module stays about behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shardkv.cluster.limits import Limits
from shardkv.node.storage.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL_S
from shardkv.node.wal.write_ahead_log import WalOptions, WalStats

ENGINES = ("memory", "sqlite")


@dataclass(frozen=True, slots=True)
class Item:
    """A key's visible state: the value (decompressed), its version (the LSN of the write that
    produced it) and its expiry (Unix time in seconds, None for none)."""

    value: bytes
    version: int
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class ScanPage:
    """One page of a scan. ``cursor`` is opaque: pass it back to get the next page; None
    means the range is exhausted."""

    items: list[tuple[bytes, Item]]
    cursor: bytes | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """``deleted`` is False when the key was absent (nothing was written, and ``version`` is
    then the store's last LSN, so a caller still learns how current the answer is)."""

    deleted: bool
    version: int


@dataclass(frozen=True, slots=True)
class BatchOp:
    """One operation of an atomic batch. ``if_version`` compares with the key's version
    before the batch (0 means "absent"); ``if_absent`` requires the key to be absent."""

    op: Literal["put", "delete"]
    key: bytes
    value: bytes = b""
    if_version: int | None = None
    if_absent: bool = False
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """``version`` is the batch's LSN (every key it wrote has it). ``results`` holds one
    wire-ready map per op in input order: ``{"op": "put", "key", "version"}`` or
    ``{"op": "delete", "key", "deleted"}``."""

    version: int
    results: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class StoreConfig:
    """How a Store is laid out on disk and how it behaves.

    ``snapshot_wal_bytes``: a snapshot is taken (in the background) once this many bytes have
    been logged since the last one. ``retain_wal_entries``: how much WAL tail is kept behind a
    snapshot, so replicas slightly behind can catch up from the log instead of a snapshot.
    ``retain_wal_bytes`` bounds that tail in bytes too (None: sized from the last snapshot
    and the disk, ``snapshots/retention.py``). ``snapshot_wal_ratio``: a snapshot is also due
    once the bytes logged since the last one reach this multiple of its size (and at least
    ``snapshot_min_wal_bytes``); 0 turns that rule off. ``low_disk_bytes``: below this much
    free space the store refuses writes (DISK_FULL), and below twice it snapshots and trims
    the log first (None: 5% of the disk, at most 256 MiB; 0 turns the guard off).
    ``ttl_sweep_interval_s``: 0 turns the sweeper off (a replica deletes expired keys only
    when its primary's deletes arrive)."""

    data_dir: Path
    engine: str = "memory"
    wal: WalOptions = field(default_factory=WalOptions)
    limits: Limits = field(default_factory=Limits)
    compression_threshold: int = 1024
    snapshot_wal_bytes: int = 128 << 20
    keep_snapshots: int = 2
    retain_wal_entries: int = 100_000
    retain_wal_bytes: int | None = None
    snapshot_wal_ratio: float = 4.0
    snapshot_min_wal_bytes: int = 16 << 20
    low_disk_bytes: int | None = None
    ttl_sweep_interval_s: float = 1.0
    ttl_sweep_batch: int = 500
    epoch: int = 1
    sqlite_flush_entries: int = 1000
    sqlite_flush_interval_s: float = 0.05
    # Client sessions (exactly-once writes, sessions.py): how long a client's last write is
    # remembered, and how many clients at most.
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    max_sessions: int = DEFAULT_MAX_SESSIONS

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.snapshot_wal_bytes < 1:
            raise ValueError("snapshot_wal_bytes must be positive")
        if self.keep_snapshots < 1:
            raise ValueError("keep_snapshots must be at least 1")
        if self.retain_wal_entries < 0:
            raise ValueError("retain_wal_entries must not be negative")
        if self.retain_wal_bytes is not None and self.retain_wal_bytes < 0:
            raise ValueError("retain_wal_bytes must not be negative")
        if self.snapshot_wal_ratio < 0 or self.snapshot_min_wal_bytes < 0:
            raise ValueError("snapshot_wal_ratio and snapshot_min_wal_bytes must not be negative")
        if self.low_disk_bytes is not None and self.low_disk_bytes < 0:
            raise ValueError("low_disk_bytes must not be negative")
        if self.ttl_sweep_interval_s < 0:
            raise ValueError("ttl_sweep_interval_s must not be negative")
        if self.epoch < 0:
            raise ValueError("epoch must not be negative")
        if self.session_ttl_s <= 0:
            raise ValueError("session_ttl_s must be positive")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def snapshot_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def sqlite_dir(self) -> Path:
        return self.data_dir / "sqlite"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening a store did, for the startup log and ``stats()``."""

    engine: str
    snapshot_lsn: int | None
    snapshot_keys: int
    engine_lsn_before_replay: int
    replayed_entries: int
    last_lsn: int
    seconds: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """An immutable snapshot of the Store's counters (``stats()`` builds a new one)."""

    engine: str
    keys: int
    epoch: int
    last_lsn: int
    applied_lsn: int
    pending_writes: int
    snapshot_lsn: int | None
    snapshot_age_s: float | None
    wal_bytes_since_snapshot: int
    snapshots_taken: int
    expired_swept: int
    recovery: RecoveryReport
    wal: WalStats
    # Client sessions (sessions.py): sessions in the primary's cache (0 on a replica),
    # retries answered from a record, and live sessions pushed out by the count bound.
    sessions: int = 0
    dedup_hits: int = 0
    sessions_evicted: int = 0

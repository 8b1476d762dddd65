"""Coordinator configuration: flags, then ``SHARDKV_*`` environment, then defaults.

Validated once at start with messages that name the offending setting, so a typo in
``--peers`` fails at launch rather than as a Raft group that never elects. Raft timings are
configurable (tests run elections in a few hundred milliseconds; production keeps the
defaults, which tolerate GC pauses and slow disks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shardkv.cluster.cluster_token import MissingCredential, require_credentials


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


def parse_peers(value: str | None, what: str = "--peers") -> dict[str, str]:
    """``c2=HOST:PORT,c3=HOST:PORT`` -> ``{"c2": "HOST:PORT", ...}``."""
    peers: dict[str, str] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, addr = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{what} entries are ID=HOST:PORT, got {item!r}")
        if name in peers:
            raise ConfigError(f"{what} names {name!r} twice")
        if what == "--peers":
            host, port = parse_host_port(addr, what)
            addr = f"{host}:{port}"
        peers[name] = addr
    return peers


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


@dataclass(slots=True)
class RaftTimings:
    """pysyncobj timings, seconds."""

    election_min: float = 0.4
    election_max: float = 1.4
    append_entries_period: float = 0.1
    connection_timeout: float = 3.5
    connection_retry: float = 1.0
    leader_fallback: float = 5.0
    compaction_min_entries: int = 5000
    compaction_min_time: float = 300.0

    @classmethod
    def from_env(cls) -> RaftTimings:
        t = cls()
        t.election_min = _env_float("SHARDKV_RAFT_ELECTION_MIN_S", t.election_min)
        t.election_max = _env_float("SHARDKV_RAFT_ELECTION_MAX_S", t.election_max)
        t.append_entries_period = _env_float("SHARDKV_RAFT_HEARTBEAT_S", t.append_entries_period)
        t.connection_timeout = _env_float("SHARDKV_RAFT_CONNECTION_TIMEOUT_S",
                                          t.connection_timeout)
        t.connection_retry = _env_float("SHARDKV_RAFT_CONNECTION_RETRY_S", t.connection_retry)
        t.leader_fallback = _env_float("SHARDKV_RAFT_LEADER_FALLBACK_S", t.leader_fallback)
        t.compaction_min_entries = int(_env_float("SHARDKV_RAFT_COMPACTION_ENTRIES",
                                                  t.compaction_min_entries))
        t.compaction_min_time = _env_float("SHARDKV_RAFT_COMPACTION_S", t.compaction_min_time)
        return t

    def validate(self) -> None:
        if not 0 < self.append_entries_period < self.election_min < self.election_max:
            raise ConfigError(
                "Raft timings need 0 < heartbeat < election_min < election_max, got "
                f"{self.append_entries_period}, {self.election_min}, {self.election_max}"
            )
        if self.leader_fallback <= self.election_max:
            raise ConfigError("SHARDKV_RAFT_LEADER_FALLBACK_S must exceed the election timeout")


@dataclass(slots=True)
class CoordinatorConfig:
    id: str
    listen: str
    raft: str
    data_dir: str
    peers: dict[str, str] = field(default_factory=dict)  # id -> raft HOST:PORT
    peer_urls: dict[str, str] = field(default_factory=dict)  # id -> http URL (optional)
    advertise_url: str | None = None
    init_shards: int | None = None
    join: bool = False  # joining a running group through dynamic membership
    replication_factor: int = 1
    raft_password: str | None = None
    admin_token: str | None = None
    # The cluster credential (cluster/cluster_token.py); None runs open, loopback only.
    cluster_token: str | None = None
    commit_timeout: float = 5.0
    watch_timeout_max: float = 60.0
    suspect_s: float = 3.0
    dead_s: float = 10.0
    grace_s: float = 10.0
    timings: RaftTimings = field(default_factory=RaftTimings)

    @property
    def url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host, port = parse_host_port(self.listen, "--listen")
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    @property
    def group_size(self) -> int:
        return 1 + len(self.peers)

    def validate(self) -> None:
        if not self.id or "=" in self.id or "," in self.id:
            raise ConfigError(f"--id must be a plain name, got {self.id!r}")
        parse_host_port(self.listen, "--listen")
        host, _ = parse_host_port(self.raft, "--raft")
        if self.id in self.peers:
            raise ConfigError(f"--peers must not name this coordinator ({self.id})")
        if self.raft in self.peers.values():
            raise ConfigError("--peers repeats this coordinator's --raft address")
        if self.group_size not in (1, 3, 5) and not self.join:
            raise ConfigError(
                f"a coordinator group has 1, 3 or 5 members, got {self.group_size} "
                "(an even group tolerates no more failures than the odd one below it)"
            )
        if self.init_shards is not None and not 1 <= self.init_shards <= 4096:
            raise ConfigError("--init-shards must be between 1 and 4096")
        if not 1 <= self.replication_factor <= 7:
            raise ConfigError("--replication-factor must be between 1 and 7")
        if host in ("0.0.0.0", "::"):
            raise ConfigError(
                "--raft must name the internal interface to bind, not a wildcard address"
            )
        listen_host, _ = parse_host_port(self.listen, "--listen")
        try:  # any group size: a lone member on the network still unpickles what it gets
            require_credentials("coordinator", listen_host, token=self.cluster_token,
                                raft_password=self.raft_password, raft_host=host)
        except MissingCredential as exc:
            raise ConfigError(str(exc)) from None
        self.timings.validate()

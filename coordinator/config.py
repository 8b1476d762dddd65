"""Coordinator configuration: its settings on the shared model (``cluster/settings.py``).

Sources, lowest precedence first: a TOML file (``--config FILE``; a ``[coordinator]`` table or
the top level, with the shared ``[timing]`` table beneath), ``SHARDKV_*`` environment, flags.
Validated once at start with messages that name the offending setting, so a typo in
``--peers`` fails at launch rather than as a Raft group that never elects. Raft timings are
configurable (tests run elections in a few hundred milliseconds; production keeps the
defaults, which tolerate GC pauses and slow disks). Secrets (the Raft password, the admin
token) come from the environment or the file, never from flags (flags show in ``ps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardkv.cluster.cluster_token import MissingCredential, cluster_token, require_credentials
from shardkv.cluster.settings import ConfigError, Setting, flag, integer, merge_sources, number
from shardkv.cluster.timing import TIMING_SETTINGS, TimingContract

__all__ = ["ConfigError", "CoordinatorConfig", "RaftTimings", "load_coordinator_config",
           "parse_host_port", "parse_peers"]


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


# config key -> RaftTimings attribute; the environment variable is SHARDKV_ + the key.
_RAFT_TIMING_KEYS = {
    "raft_election_min_s": "election_min",
    "raft_election_max_s": "election_max",
    "raft_heartbeat_s": "append_entries_period",
    "raft_connection_timeout_s": "connection_timeout",
    "raft_connection_retry_s": "connection_retry",
    "raft_leader_fallback_s": "leader_fallback",
    "raft_compaction_entries": "compaction_min_entries",
    "raft_compaction_s": "compaction_min_time",
}

COORDINATOR_SETTINGS: tuple[Setting, ...] = (
    Setting("id", "SHARDKV_COORDINATOR_ID"),
    Setting("listen", "SHARDKV_LISTEN"),
    Setting("raft", "SHARDKV_RAFT_ADDR"),
    Setting("peers", "SHARDKV_PEERS"),
    Setting("peer_urls", "SHARDKV_PEER_URLS"),
    Setting("advertise_url", "SHARDKV_ADVERTISE_URL"),
    Setting("data_dir", "SHARDKV_DATA_DIR"),
    Setting("init_shards"),
    Setting("replication_factor"),
    Setting("join"),
    Setting("commit_timeout"),
    Setting("raft_password", "SHARDKV_RAFT_PASSWORD", flag=False),
    Setting("admin_token", "SHARDKV_ADMIN_TOKEN", flag=False),
    *(Setting(key, "SHARDKV_" + key.upper()) for key in _RAFT_TIMING_KEYS),
    *TIMING_SETTINGS,
)
DEFAULT_LISTEN = "127.0.0.1:7000"


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
    def from_values(cls, values: Mapping[str, Any]) -> RaftTimings:
        """From merged raw settings (keys of ``RAFT_TIMING_SETTINGS``)."""
        t = cls()
        for key, attribute in _RAFT_TIMING_KEYS.items():
            if values.get(key) is not None:
                default = getattr(t, attribute)
                if isinstance(default, int):
                    setattr(t, attribute, integer(key, values[key], minimum=1))
                else:
                    setattr(t, attribute, number(key, values[key], minimum=0.0))
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
    timing: TimingContract = field(default_factory=TimingContract)

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


def load_coordinator_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | str | None = None,
) -> CoordinatorConfig:
    """Merge file < environment < flags (``None`` flags are unset) and validate the result.

    Raises ``ConfigError`` with a message that names the setting and what was wrong.
    """
    values = merge_sources(COORDINATOR_SETTINGS, "coordinator", flags, environ, config_file)
    missing = [name for name in ("id", "raft", "data_dir") if not values.get(name)]
    if missing:
        raise ConfigError("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))

    def optional(key: str) -> str | None:
        raw = values.get(key)
        return str(raw).strip() or None if raw is not None else None

    init_shards = values.get("init_shards")
    config = CoordinatorConfig(
        id=str(values["id"]).strip(),
        listen=str(values.get("listen", DEFAULT_LISTEN)).strip(),
        raft=str(values["raft"]).strip(),
        data_dir=str(values["data_dir"]),
        peers=parse_peers(_joined(values.get("peers"))),
        peer_urls=parse_peers(_joined(values.get("peer_urls")), "--peer-urls"),
        advertise_url=optional("advertise_url"),
        init_shards=integer("--init-shards", init_shards, minimum=-(1 << 31))
        if init_shards is not None else None,
        replication_factor=integer("--replication-factor", values.get("replication_factor", 1),
                                   minimum=-(1 << 31)),
        raft_password=optional("raft_password"),
        admin_token=optional("admin_token"),
        cluster_token=cluster_token(environ),
        commit_timeout=number("--commit-timeout", values.get("commit_timeout", 5.0),
                              minimum=0.001),
        join=flag("--join", values.get("join", False)),
        timings=RaftTimings.from_values(values),
        timing=TimingContract.from_values(values),
    )
    config.validate()
    return config


def _joined(raw: object) -> str:
    """``a=1,b=2`` from the environment or a flag, or a TOML list of ``a=1`` items."""
    if isinstance(raw, list | tuple):
        return ",".join(str(item) for item in raw)
    return "" if raw is None else str(raw)

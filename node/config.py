"""The storage node's configuration: one model, three sources, validated once at start.

Sources, lowest precedence first: a TOML file (``--config FILE``; keys at the top level or
under a ``[node]`` table, so one file can configure several kinds of process), the
environment (``SHARDKV_DATA_DIR``, ``SHARDKV_LISTEN``, ...), then command-line flags. Every
value is checked here, before anything is opened or bound, so a mistake is reported as one
clear sentence (and ``shardkv node`` exits 2) instead of a stack trace half way through
startup.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardkv.cluster.limits import (
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    HARD_MAX_VALUE_BYTES,
    MAX_FRAME_BYTES,
)
from shardkv.node.api.limits import ConnectionLimits

ENGINES = ("memory", "sqlite")
FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_LISTEN = "127.0.0.1:7100"


class ConfigError(ValueError):
    """A configuration mistake, with a message meant for the person who made it."""


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
    # Requests one rpc connection may have in flight before the node stops reading from it
    # (TCP backpressure then slows the client down instead of the node queueing without bound).
    max_inflight_per_connection: int = 1024
    # How long a graceful stop waits for requests in flight before closing connections.
    shutdown_grace_s: float = 10.0
    log_level: str = "info"
    # Resource bounds against a client that is slow, greedy or hostile (node/api/limits.py).
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    max_connections: int = 4096
    max_connections_per_address: int = 256
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    max_pending_frame_bytes: int = 128 << 20

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            header_timeout_s=self.header_timeout_s, idle_timeout_s=self.idle_timeout_s,
            max_pending_frame_bytes=self.max_pending_frame_bytes)

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def standalone(self) -> bool:
        """No coordinator: the node is the primary of a one-node shard."""
        return not self.coordinators


# One table drives the three sources: config key -> (environment variable, parser).
def _text(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {raw!r}")
    return raw.strip()


def _int(name: str, raw: object, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not isinstance(raw, int):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    if raw < minimum or (maximum is not None and raw > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {raw}")
    return raw


def _float(name: str, raw: object, *, minimum: float) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def parse_listen(raw: object) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); port 0 means any free port."""
    text = _text("listen", raw)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"listen has a bad IPv6 address: {text!r}") from None
    elif ":" in host:
        raise ConfigError(f"listen: write an IPv6 address in brackets, [::1]:PORT; got {text!r}")
    elif any(ch.isspace() or ch in "/?#@" for ch in host):
        raise ConfigError(f"listen has a bad host: {text!r}")
    if not port_text.isdigit():
        raise ConfigError(f"listen port must be a number, got {port_text!r} in {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"listen port must be between 0 and 65535, got {port}")
    return host, port


def _url_list(name: str, raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{name} must be a URL or a list of URLs, got {raw!r}")
    urls = []
    for item in items:
        url = _text(name, item).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")
        urls.append(url)
    return tuple(urls)


def _choice(name: str, raw: object, choices: tuple[str, ...]) -> str:
    value = _text(name, raw).lower()
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


_KEYS: dict[str, str] = {
    # config-file key -> environment variable
    "data_dir": "SHARDKV_DATA_DIR",
    "listen": "SHARDKV_LISTEN",
    "engine": "SHARDKV_ENGINE",
    "fsync": "SHARDKV_FSYNC",
    "fsync_interval_ms": "SHARDKV_FSYNC_INTERVAL_MS",
    "max_value_bytes": "SHARDKV_MAX_VALUE_BYTES",
    "coordinator": "SHARDKV_COORDINATOR",
    "shard": "SHARDKV_SHARD",
    "node_id": "SHARDKV_NODE_ID",
    "snapshot_wal_bytes": "SHARDKV_SNAPSHOT_WAL_BYTES",
    "wal_segment_bytes": "SHARDKV_WAL_SEGMENT_BYTES",
    "retain_wal_entries": "SHARDKV_RETAIN_WAL_ENTRIES",
    "max_inflight_per_connection": "SHARDKV_MAX_INFLIGHT_PER_CONNECTION",
    "shutdown_grace_s": "SHARDKV_SHUTDOWN_GRACE_S",
    "log_level": "SHARDKV_LOG_LEVEL",
    "max_answer_bytes": "SHARDKV_MAX_ANSWER_BYTES",
    "max_connections": "SHARDKV_MAX_CONNECTIONS",
    "max_connections_per_address": "SHARDKV_MAX_CONNECTIONS_PER_ADDRESS",
    "header_timeout_s": "SHARDKV_HEADER_TIMEOUT_S",
    "idle_timeout_s": "SHARDKV_IDLE_TIMEOUT_S",
    "max_pending_frame_bytes": "SHARDKV_MAX_PENDING_FRAME_BYTES",
}


def read_config_file(path: Path) -> dict[str, Any]:
    """The node's settings from a TOML file: the ``[node]`` table if there is one, else the
    top level. Unknown keys are errors (a typo must not silently fall back to a default)."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get("node", document)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [node] must be a table")
    unknown = sorted(k for k in table if k not in _KEYS and not isinstance(table[k], dict))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(_KEYS)}"
        )
    return {k: v for k, v in table.items() if k in _KEYS}


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The node's settings from ``SHARDKV_*`` variables (empty values are ignored)."""
    return {key: environ[var] for key, var in _KEYS.items() if environ.get(var, "").strip()}


def load_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | str | None = None,
) -> NodeConfig:
    """Merge file < environment < flags (``None`` flags are unset) and validate the result.

    Raises ``ConfigError`` with a message that names the setting and what was wrong.
    """
    merged: dict[str, Any] = {}
    file_path = config_file or environ.get("SHARDKV_CONFIG") or None
    if file_path:
        merged.update(read_config_file(Path(file_path)))
    merged.update(read_environment(environ))
    unknown = sorted(k for k in flags if k not in _KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    merged.update({k: v for k, v in flags.items() if v is not None})
    return build_config(merged)


def build_config(values: Mapping[str, Any]) -> NodeConfig:
    """Validate raw settings (strings from the environment, typed values from TOML)."""
    if "data_dir" not in values:
        raise ConfigError("no data directory: pass --data-dir DIR (or set SHARDKV_DATA_DIR)")
    data_dir = Path(_text("data_dir", values["data_dir"])).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data_dir {data_dir} exists and is not a directory")
    host, port = parse_listen(values.get("listen", DEFAULT_LISTEN))
    max_value = _int("max_value_bytes", values.get("max_value_bytes", DEFAULT_MAX_VALUE_BYTES),
                     minimum=1)
    if max_value > HARD_MAX_VALUE_BYTES:
        raise ConfigError(
            f"max_value_bytes {max_value} is over the hard cap of {HARD_MAX_VALUE_BYTES} "
            f"bytes (16 MiB)"
        )
    coordinators = _url_list("coordinator", values["coordinator"]) if values.get(
        "coordinator") else ()
    shard = _text("shard", values["shard"]) if values.get("shard") is not None else None
    node_id = _text("node_id", values["node_id"]) if values.get("node_id") is not None else None
    log_level = _choice("log_level", values.get("log_level", "info"),
                        ("debug", "info", "warning", "error"))
    return NodeConfig(
        data_dir=data_dir,
        listen_host=host,
        listen_port=port,
        engine=_choice("engine", values.get("engine", "memory"), ENGINES),
        fsync=_choice("fsync policy", values.get("fsync", "always"), FSYNC_POLICIES),
        fsync_interval_ms=_int("fsync_interval_ms", values.get("fsync_interval_ms", 100),
                               minimum=1, maximum=60_000),
        max_value_bytes=max_value,
        coordinators=coordinators,
        shard=shard,
        node_id=node_id,
        snapshot_wal_bytes=_int("snapshot_wal_bytes", values.get("snapshot_wal_bytes",
                                                                  128 << 20), minimum=1 << 16),
        wal_segment_bytes=_int("wal_segment_bytes", values.get("wal_segment_bytes", 64 << 20),
                               minimum=4096, maximum=1 << 32),
        retain_wal_entries=_int("retain_wal_entries", values.get("retain_wal_entries",
                                                                  100_000), minimum=0),
        max_inflight_per_connection=_int(
            "max_inflight_per_connection", values.get("max_inflight_per_connection", 1024),
            minimum=1, maximum=1 << 16),
        shutdown_grace_s=_float("shutdown_grace_s", values.get("shutdown_grace_s", 10.0),
                                minimum=0.0),
        log_level=log_level,
        max_answer_bytes=_int("max_answer_bytes", values.get(
            "max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES), minimum=1 << 16,
            maximum=MAX_FRAME_BYTES),
        max_connections=_int("max_connections", values.get("max_connections", 4096),
                             minimum=1),
        max_connections_per_address=_int("max_connections_per_address", values.get(
            "max_connections_per_address", 256), minimum=1),
        header_timeout_s=_float("header_timeout_s", values.get("header_timeout_s", 10.0),
                                minimum=0.1),
        idle_timeout_s=_float("idle_timeout_s", values.get("idle_timeout_s", 75.0),
                              minimum=0.1),
        max_pending_frame_bytes=_int("max_pending_frame_bytes", values.get(
            "max_pending_frame_bytes", 128 << 20), minimum=MAX_FRAME_BYTES),
    )

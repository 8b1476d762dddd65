"""The one configuration model every shardkv process uses: file, environment, flags.

Sources, lowest precedence first: a TOML file (``--config FILE`` or ``SHARDKV_CONFIG``), the
environment (``SHARDKV_*``), then command-line flags. In the file a process reads its own
table (``[node]``, ``[coordinator]``) or, when the file has none, the top level; a
``[timing]`` table is read by every process beneath its own, so one file can hand the node
and the coordinator the same timing contract (``cluster/timing.py``). Unknown keys are
errors: a typo must not silently fall back to a default.

Each process declares its settings once (``Setting``: file key, environment variable,
whether a flag may set it) and validates the merged raw values with the parsers here, so a
mistake is one ``ConfigError`` sentence naming the setting, and the CLI exits 2
(``config_failed``), the status argparse uses for a bad flag.
"""

from __future__ import annotations

import ipaddress
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE_ENV = "SHARDKV_CONFIG"
SHARED_TIMING_TABLE = "timing"


class ConfigError(ValueError):
    """A configuration mistake, with a message meant for the person who made it."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its key in the file (and in the flags mapping), its environment variable,
    and whether a flag may carry it (secrets may not: flags show in ``ps``)."""

    key: str
    env: str | None = None
    flag: bool = True


def config_failed(program: str, exc: ConfigError) -> int:
    """Report a configuration mistake in one sentence on stderr; the exit status (2)."""
    print(f"{program}: configuration error: {exc}", file=sys.stderr)
    return 2


def read_config_file(path: Path, table: str, known: Iterable[str]) -> dict[str, Any]:
    """``table`` (or the top level) of a TOML file, with the shared ``[timing]`` table under
    it. Raises ``ConfigError`` for an unreadable file or an unknown key."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = list(known)
    values: dict[str, Any] = {}
    for name in (SHARED_TIMING_TABLE, table):
        section = document.get(name, document if name == table else {})
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: [{name}] must be a table")
        # Other processes' tables (and [timing] at the top level) are not this table's keys.
        unknown = sorted(k for k, v in section.items()
                         if k not in known and not isinstance(v, dict))
        if unknown:
            raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(known)}")
        values.update({k: v for k, v in section.items() if k in known})
    return values


def merge_sources(
    settings: Iterable[Setting],
    table: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | str | None = None,
) -> dict[str, Any]:
    """Raw values, file < environment < flags. ``None`` flags are unset; empty environment
    variables are ignored."""
    by_key = {s.key: s for s in settings}
    merged: dict[str, Any] = {}
    file_path = config_file or environ.get(CONFIG_FILE_ENV) or None
    if file_path:
        merged.update(read_config_file(Path(file_path), table, by_key))
    for key, setting in by_key.items():
        if setting.env and environ.get(setting.env, "").strip():
            merged[key] = environ[setting.env]
    unknown = sorted(k for k in flags if k not in by_key or not by_key[k].flag)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


# ------------------------------------------------------------------------------ parsers
# Each takes the setting's name (for the message) and a raw value: a string from the
# environment or a flag, or a typed value from TOML.

def text(name: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {raw!r}")
    return raw.strip()


def integer(name: str, raw: object, *, minimum: int, maximum: int | None = None) -> int:
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


def number(name: str, raw: object, *, minimum: float, maximum: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {raw!r}")
    return value


def flag(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    value = text(name, raw).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def choice(name: str, raw: object, choices: tuple[str, ...]) -> str:
    value = text(name, raw).lower()
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def url_list(name: str, raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{name} must be a URL or a list of URLs, got {raw!r}")
    urls = []
    for item in items:
        url = text(name, item).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")
        urls.append(url)
    return tuple(urls)


def parse_listen(raw: object, name: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); port 0 means any free port."""
    value = text(name, raw)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{name} has a bad IPv6 address: {value!r}") from None
    elif ":" in host:
        raise ConfigError(f"{name}: write an IPv6 address in brackets, [::1]:PORT; "
                          f"got {value!r}")
    elif any(ch.isspace() or ch in "/?#@" for ch in host):
        raise ConfigError(f"{name} has a bad host: {value!r}")
    if not port_text.isdigit():
        raise ConfigError(f"{name} port must be a number, got {port_text!r} in {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{name} port must be between 0 and 65535, got {port}")
    return host, port

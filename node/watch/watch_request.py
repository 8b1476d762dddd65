"""The first frame of a ``/v1/watch`` session: what to watch and from where, checked; and the
URL's read options (``?consistency=eventual&max_staleness_ms=N``: which members may serve
it, as for an eventual read).

A bad request gets ``INVALID_ARGUMENT`` and changes nothing (no subscription is made)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shardkv.cluster.errors import InvalidArgument
from shardkv.node.watch.watch_filter import WatchFilter

MIN_PROGRESS_INTERVAL_MS = 50
MAX_PROGRESS_INTERVAL_MS = 600_000
DEFAULT_PROGRESS_INTERVAL_MS = 1_000

_FIELDS = {"key", "prefix", "start", "end", "start_version", "values", "progress_interval_ms"}
_QUERY = {"consistency", "max_staleness_ms", "retired"}


@dataclass(frozen=True, slots=True)
class WatchRequest:
    watch: WatchFilter
    start_version: int | None
    values: bool
    progress_interval_s: float
    # ``eventual``: a replica may serve the watch, while within ``max_staleness_ms`` (None:
    # any staleness) of its primary; ``strong``: only the primary.
    eventual: bool = False
    max_staleness_ms: float | None = None
    # ``retired``: the client follows a shard that left the map, to the end of its log: a
    # member without a role may serve it (``watch_session.py``, docs/watch.md).
    retired: bool = False

    @classmethod
    def parse(cls, raw: Any, query: Mapping[str, str] | None = None) -> WatchRequest:
        eventual, bound = read_options(query or {})
        if not isinstance(raw, dict):
            raise InvalidArgument("the first watch frame must be a map of options")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise InvalidArgument(f"unknown watch options: {sorted(map(str, unknown))}")
        watch = WatchFilter.parse(key=raw.get("key"), prefix=raw.get("prefix"),
                                  start=raw.get("start"), end=raw.get("end"))
        start_version = raw.get("start_version")
        if start_version is not None and (
                type(start_version) is not int or start_version < 0):
            raise InvalidArgument("start_version must be a non-negative integer")
        values = raw.get("values", True)
        if type(values) is not bool:
            raise InvalidArgument("values must be true or false")
        interval = raw.get("progress_interval_ms", DEFAULT_PROGRESS_INTERVAL_MS)
        if type(interval) is not int or not (
                MIN_PROGRESS_INTERVAL_MS <= interval <= MAX_PROGRESS_INTERVAL_MS):
            raise InvalidArgument(
                f"progress_interval_ms must be an integer from {MIN_PROGRESS_INTERVAL_MS} "
                f"to {MAX_PROGRESS_INTERVAL_MS}")
        return cls(watch, start_version, values, interval / 1000, eventual, bound,
                   retired_option(query or {}))


def retired_option(query: Mapping[str, str]) -> bool:
    """``?retired=true``: the watch is for a shard that left the cluster (see the field)."""
    raw = query.get("retired", "false")
    if raw not in ("true", "false"):
        raise InvalidArgument(f"retired must be true or false, got {raw!r}")
    return raw == "true"


def read_options(query: Mapping[str, str]) -> tuple[bool, float | None]:
    """(eventual, max_staleness_ms) from the URL's query, checked."""
    unknown = set(query) - _QUERY
    if unknown:
        raise InvalidArgument(f"unknown watch query parameters: {sorted(unknown)}")
    consistency = query.get("consistency", "strong")
    if consistency not in ("strong", "eventual"):
        raise InvalidArgument(f"consistency must be strong or eventual, got {consistency!r}")
    raw = query.get("max_staleness_ms")
    if raw is None:
        return consistency == "eventual", None
    if consistency != "eventual":
        raise InvalidArgument("max_staleness_ms needs consistency=eventual")
    try:
        bound = float(raw)
    except ValueError:
        bound = math.nan
    if not 0 <= bound < math.inf:
        raise InvalidArgument(f"max_staleness_ms must be a non-negative number, got {raw!r}")
    return True, bound

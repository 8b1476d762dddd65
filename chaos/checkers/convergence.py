"""Convergence: after heal and settle, all members of each shard hold the same data.

The runner asks every member of every shard for a digest of its data (for example a hash of
its key/value/version triples up to an LSN, with the LSN) and passes them here. Members that
could not be asked (``None``) make the verdict unknown, never ok.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from shardkv.chaos.checkers.result import CheckResult


def check_convergence(digests: Mapping[str, Mapping[str, Any | None]]) -> CheckResult:
    """``digests``: shard id -> member id -> digest (any comparable value) or None."""
    result = CheckResult("convergence")
    for shard, members in sorted(digests.items()):
        missing = sorted(m for m, d in members.items() if d is None)
        if missing:
            result.unknown("unreachable-member", shard, f"no digest from {', '.join(missing)}")
        groups: dict[Any, list[str]] = defaultdict(list)
        for member, digest in sorted(members.items()):
            if digest is not None:
                groups[_freeze(digest)].append(member)
        if len(groups) > 1:
            listing = "; ".join(f"{', '.join(ms)}: {d!r}" for d, ms in groups.items())
            result.anomaly(
                "divergent-replicas", shard, f"members of shard {shard} differ: {listing}",
                groups={str(d): ms for d, ms in groups.items()},
            )
    result.stats = {
        "shards": len(digests),
        "members": sum(len(m) for m in digests.values()),
    }
    return result


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value

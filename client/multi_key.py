"""Multi-key calls: split by shard, run the parts concurrently, answer in input order.

A multi-key call is not atomic across shards, so a part can fail while others succeed. That
is reported, never swallowed: ``MultiKeyError`` carries the results that did arrive (in input
order) and the error of each key that failed, and its code is the first failure's code so a
caller who only checks ``retryable`` still does the right thing.

When the ring changes under a call (a node answers STALE_MAP and the refreshed map owns the
keys of a part differently), the part is split again along the new ring.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from shardkv.client.executor import Regroup
from shardkv.client.routing import Router
from shardkv.cluster.errors import ErrorCode, ShardKVError

T = TypeVar("T")

# A part runner gets the indexes (into the caller's key list) of the keys of one shard and
# returns one result per index, in that order.
PartRunner = Callable[[list[int]], Awaitable[list[Any]]]

MAX_REGROUPS = 16


class MultiKeyError(ShardKVError):
    """Some keys of a multi-key call failed. ``results[i]`` is the answer for the i-th input
    (None where it failed), ``errors`` maps each failed input index to its error."""

    def __init__(
        self,
        message: str,
        *,
        keys: Sequence[bytes],
        results: list[Any],
        errors: dict[int, ShardKVError],
    ) -> None:
        super().__init__(message)
        first = errors[min(errors)]
        self.code = first.code
        self.keys = list(keys)
        self.results = results
        self.errors = errors

    @property
    def retryable(self) -> bool:
        return all(e.retryable for e in self.errors.values())

    def errors_by_key(self) -> dict[bytes, ShardKVError]:
        return {self.keys[i]: e for i, e in self.errors.items()}

    @property
    def failed_code(self) -> ErrorCode:
        return self.code


def group_by_shard(
    router: Router, keys: Sequence[bytes], indexes: list[int]
) -> dict[str, list[int]]:
    """Indexes of ``keys`` grouped by owning shard, each group in input order."""
    groups: dict[str, list[int]] = {}
    for i in indexes:
        groups.setdefault(router.shard_of(keys[i]), []).append(i)
    return groups


async def run_split(
    router: Router,
    keys: Sequence[bytes],
    run_part: PartRunner,
) -> list[Any]:
    """Run ``run_part`` once per shard, concurrently; results in input order.

    Raises ``MultiKeyError`` if any part failed (with the partial results); errors that are
    not ShardKVErrors (bugs, cancellation) propagate unchanged.
    """
    results: list[Any] = [None] * len(keys)
    errors: dict[int, ShardKVError] = {}
    pending = list(range(len(keys)))
    for _ in range(MAX_REGROUPS):
        if not pending:
            break
        groups = group_by_shard(router, keys, pending)
        parts = list(groups.values())
        outcomes = await asyncio.gather(*(run_part(p) for p in parts), return_exceptions=True)
        pending = []
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, Regroup):
                pending.extend(part)
            elif isinstance(outcome, ShardKVError):
                for i in part:
                    errors[i] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                for i, value in zip(part, outcome, strict=True):
                    results[i] = value
        pending.sort()
    for i in pending:  # the ring kept moving under us: report, do not loop forever
        errors[i] = ShardKVError("the ring changed too often during the call")
    if errors:
        codes = sorted({e.code.value for e in errors.values()})
        raise MultiKeyError(
            f"{len(errors)} of {len(keys)} keys failed ({', '.join(codes)})",
            keys=keys,
            results=results,
            errors=errors,
        )
    return results

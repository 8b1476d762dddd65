"""Multi-key calls of any size: split by shard, then into chunks a node accepts, run with
bounded concurrency, answer in input order.

A node takes at most ``max_batch_ops`` operations and ``max_batch_bytes`` bytes in one request
(``cluster/limits.py``; each node reports its own in ``ping`` and ``/v1/status``, and the
client learns them from the node rather than assuming them). So each shard's share of the keys
is cut into chunks under both limits, in input order, and at most ``MAX_CHUNKS_IN_FLIGHT``
chunks are in flight at once. redis-py users pass thousands of keys to MGET without a thought;
here that just works.

**Atomicity holds per chunk within a shard**: each chunk is one atomic write on its shard, but
a call with more keys than fit one chunk, or keys on several shards, is not atomic as a whole.
Use ``batch`` for all-or-nothing (it refuses more than one chunk's worth, and says so).

A part can fail while others succeed. That is reported, never swallowed: ``MultiKeyError``
carries the results that did arrive (in input order) and the error of each key that failed,
and its code is the first failure's code so a caller who only checks ``retryable`` still does
the right thing.

When the ring changes under a call (a node answers STALE_MAP and the refreshed map owns the
keys of a part differently), the part is split again along the new ring. A part whose answer
would pass the node's answer cap (``TOO_LARGE``: an ``mget`` of large values; the node refuses
before building it) is cut in two and each half asked again.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from shardkv.client.executor import Executor, Regroup
from shardkv.client.routing import RoutedKeys, Router
from shardkv.cluster.errors import ErrorCode, ShardKVError, TooLarge
from shardkv.cluster.limits import Limits

T = TypeVar("T")

# A part runner gets the indexes (into the caller's key list) of the keys of one shard and
# returns one result per index, in that order.


class Part(list[int]):
    """Indexes (into the call's keys) of one part, with the shard they were grouped under and
    the map version that said so (None for a part re-cut after its answer was too large)."""

    __slots__ = ("map_version", "shard")

    def __init__(self, indexes: Iterable[int], shard: str | None, map_version: int) -> None:
        super().__init__(indexes)
        self.shard = shard
        self.map_version = map_version


PartRunner = Callable[[Part], Awaitable[list[Any]]]


def part_keys(keys: Sequence[bytes], part: Part) -> RoutedKeys:
    """The keys of ``part``, marked with their shard so that the executor does not hash
    them again."""
    return RoutedKeys([keys[i] for i in part], part.shard, part.map_version)

MAX_REGROUPS = 16
MAX_CHUNKS_IN_FLIGHT = 8
# Room in a chunk for what travels beside each key and value (msgpack framing, arguments).
PER_OP_OVERHEAD_BYTES = 64

_learned: weakref.WeakKeyDictionary[Executor, Limits] = weakref.WeakKeyDictionary()


async def node_limits(executor: Executor, fallback: Limits) -> Limits:
    """The request limits the cluster's nodes enforce, asked of a node once per client (its
    ``ping`` carries ``limits``) and remembered; ``fallback`` when no node says (an older
    node, or none reachable: the call itself will then report why)."""
    known = _learned.get(executor)
    if known is not None:
        return known
    router = executor.router
    try:
        if router.direct:
            url = router.direct_url or ""
        else:
            url = router.primary(router.shards()[0]).url
        answer = await executor.pool(url).call("ping", {}, 2.0)
        raw = answer.get("limits") or {}
        learned = Limits(
            max_value_bytes=int(raw["max_value_bytes"]),
            max_batch_ops=int(raw["max_batch_ops"]),
            max_batch_bytes=int(raw["max_batch_bytes"]),
        )
    except (ShardKVError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return fallback
    _learned[executor] = learned
    return learned


def chunk_indexes(indexes: list[int], sizes: Sequence[int] | None,
                  limits: Limits) -> list[list[int]]:
    """``indexes`` cut, in order, into runs of at most ``max_batch_ops`` whose sizes (plus a
    per-operation overhead) stay under ``max_batch_bytes``. A single item is never split: one
    that alone exceeds the byte limit goes alone, and the node answers TOO_LARGE for it."""
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for i in indexes:
        size = (sizes[i] if sizes is not None else 0) + PER_OP_OVERHEAD_BYTES
        if current and (len(current) >= limits.max_batch_ops
                        or current_bytes + size > limits.max_batch_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


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
    *,
    limits: Limits | None = None,
    sizes: Sequence[int] | None = None,
    concurrency: int = MAX_CHUNKS_IN_FLIGHT,
) -> list[Any]:
    """Run ``run_part`` once per chunk of each shard's keys (chunks under ``limits``, sized by
    ``sizes[i]`` bytes for key i), at most ``concurrency`` at a time; results in input order.

    Raises ``MultiKeyError`` if any part failed (with the partial results); errors that are
    not ShardKVErrors (bugs, cancellation) propagate unchanged.
    """
    limits = limits or Limits()
    slots = asyncio.Semaphore(max(concurrency, 1))

    async def bounded(part: Part) -> list[Any]:
        async with slots:
            return await run_part(part)

    results: list[Any] = [None] * len(keys)
    errors: dict[int, ShardKVError] = {}
    pending = list(range(len(keys)))
    halves: list[Part] = []  # parts whose answer was too large, cut in two
    for _ in range(MAX_REGROUPS):
        if not pending and not halves:
            break
        version = router.version
        groups = group_by_shard(router, keys, pending)
        parts = [Part(chunk, shard, version) for shard, group in groups.items()
                 for chunk in chunk_indexes(group, sizes, limits)] + halves
        outcomes = await asyncio.gather(*(bounded(p) for p in parts), return_exceptions=True)
        pending, halves = [], []
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, Regroup):
                pending.extend(part)
            elif (isinstance(outcome, ShardKVError) and outcome.code is ErrorCode.TOO_LARGE
                  and len(part) > 1):
                # The request fitted but the answer did not (an mget of large values: the
                # node caps an answer's bytes and refuses before building it, so nothing was
                # done): the same keys in two smaller parts.
                middle = len(part) // 2
                halves.extend((Part(part[:middle], None, -1), Part(part[middle:], None, -1)))
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
    for part in halves:
        for i in part:
            errors[i] = TooLarge(f"the answer stayed over the node's byte cap after "
                                 f"{MAX_REGROUPS} splits")
    if errors:
        codes = sorted({e.code.value for e in errors.values()})
        raise MultiKeyError(
            f"{len(errors)} of {len(keys)} keys failed ({', '.join(codes)})",
            keys=keys,
            results=results,
            errors=errors,
        )
    return results

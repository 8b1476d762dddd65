"""Every operation of the public surface, written once.

``Commands`` is a mixin in redis-py's shape: it turns typed arguments into rpc requests and
rpc answers into typed results, and leaves the transport to the class that mixes it in (which
provides ``_executor``, ``_limits`` and ``_consistency``). ``Client`` mixes it in directly;
``SyncClient`` exposes the very same methods, blocking, by running them on its private loop,
so the two clients cannot drift apart.

Arguments are validated here, before anything is sent, with the same limit checks the node
applies: a bad key or an oversized value never costs a round trip.
"""

# ruff: noqa: ASYNC109  (a per-call `timeout` is part of the public API: it bounds the
# whole call, retries and redirects included, so it cannot be left to asyncio.timeout)

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from shardkv.client.executor import Executor
from shardkv.client.multi_key import Part, node_limits, part_keys, run_split
from shardkv.client.read_cache import ReadCache
from shardkv.client.retry import DecorrelatedJitterBackoff
from shardkv.client.scan_merge import key_type_of, merged_scan
from shardkv.client.values import DeleteResult, Item, KeyItem
from shardkv.cluster.errors import (
    InvalidArgument,
    NotFound,
    Timeout,
    TooLarge,
    VersionMismatch,
)
from shardkv.cluster.limits import (
    MAX_SCAN_LIMIT,
    Limits,
    as_key,
    as_ttl,
    as_value,
    as_version,
)

Consistency = Literal["strong", "eventual"]
WriteConcern = Literal["majority", "one"]
Key = str | bytes
UpdateFn = Callable[[Item | None], bytes | str | Awaitable[bytes | str | None] | None]

DEFAULT_SCAN_PAGE = 100
DEFAULT_UPDATE_ATTEMPTS = 1000


def _consistency(value: str | None, default: str) -> str:
    chosen = value or default
    if chosen not in ("strong", "eventual"):
        raise InvalidArgument(f"consistency must be 'strong' or 'eventual', not {chosen!r}")
    return chosen


def _write_args(args: dict[str, Any], write_concern: str | None) -> dict[str, Any]:
    if write_concern is not None:
        if write_concern not in ("majority", "one"):
            raise InvalidArgument(
                f"write_concern must be 'majority' or 'one', not {write_concern!r}"
            )
        args["w"] = write_concern
    return args


class Commands:
    """The operations. Each method is a coroutine here; ``SyncClient`` makes them blocking."""

    _executor: Executor
    _limits: Limits
    _consistency: str
    _read_cache: ReadCache | None = None  # Client(cache=CacheConfig(...))

    # -- reads -------------------------------------------------------------------------------

    def _read_args(
        self,
        consistency: str | None,
        max_staleness_ms: int | None,
        min_version: int | None,
    ) -> tuple[dict[str, Any], bool]:
        mode = _consistency(consistency, self._consistency)
        args: dict[str, Any] = {"consistency": mode}
        if max_staleness_ms is not None:
            args["max_staleness_ms"] = as_version(max_staleness_ms, "max_staleness_ms")
        if min_version is not None:
            args["min_version"] = as_version(min_version, "min_version")
        return args, mode == "eventual"

    async def get(
        self,
        key: Key,
        *,
        consistency: Consistency | None = None,
        max_staleness_ms: int | None = None,
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> Item | None:
        """The item under ``key``, or None. ``consistency="eventual"`` may read a replica no
        more than ``max_staleness_ms`` behind; ``min_version`` refuses anything older than a
        version you already saw (read-your-writes across replicas)."""
        raw = as_key(key)
        args, eventual = self._read_args(consistency, max_staleness_ms, min_version)
        args["key"] = raw
        cache = self._read_cache if min_version is None else None
        fill: Callable[[Item], None] | None = None
        if cache is not None:
            hit, fill = cache.read_through(self._executor.router, raw, eventual,
                                           max_staleness_ms)
            if hit is not None:
                return hit
            if fill is not None:  # a miss reads through from the primary (read_cache.py)
                args, eventual = {"key": raw, "consistency": "strong"}, False
        try:
            body = await self._executor.call("get", args, keys=(raw,), eventual=eventual,
                                             budget=timeout)
        except NotFound:
            return None
        item = Item.from_wire(body)
        if fill is not None:
            fill(item)
        return item

    async def exists(self, key: Key, *, timeout: float | None = None) -> bool:
        raw = as_key(key)
        body = await self._executor.call("exists", {"key": raw}, budget=timeout)
        return bool(body["exists"])

    async def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        """Seconds left before ``key`` expires (None: it never does). NotFound if absent."""
        raw = as_key(key)
        body = await self._executor.call("ttl", {"key": raw}, budget=timeout)
        ttl = body.get("ttl")
        return None if ttl is None else float(ttl)

    async def mget(
        self,
        keys: Sequence[Key],
        *,
        consistency: Consistency | None = None,
        max_staleness_ms: int | None = None,
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> list[Item | None]:
        """Items in input order (None for absent keys), any number of keys: each shard's share
        goes in chunks under the node's limits, several at once (``multi_key``). Raises
        ``MultiKeyError`` with the partial results if some chunk failed."""
        raw_keys = [as_key(k) for k in keys]
        if not raw_keys:
            return []
        base, eventual = self._read_args(consistency, max_staleness_ms, min_version)

        async def part(indexes: Part) -> list[Item | None]:
            routed = part_keys(raw_keys, indexes)
            body = await self._executor.call(
                "mget",
                {**base, "keys": routed},
                keys=routed,
                eventual=eventual,
                budget=timeout,
            )
            return [Item.from_wire(it) if it is not None else None for it in body["items"]]

        limits = await node_limits(self._executor, self._limits)
        return await run_split(self._executor.router, raw_keys, part, limits=limits)

    def scan(
        self,
        prefix: Key | None = None,
        *,
        start: Key | None = None,
        end: Key | None = None,
        limit: int | None = None,
        page_size: int = DEFAULT_SCAN_PAGE,
        timeout: float | None = None,
    ) -> AsyncGenerator[KeyItem, None]:
        """Keys with ``prefix`` (or in ``[start, end)``), in key order across all shards,
        fetched page by page: ``async for item in kv.scan(prefix="user:")``. Each page is a
        strong read of one shard; the scan as a whole is not a snapshot (writes made while it
        runs may or may not be seen). Keys come as ``str`` unless you scan with a bytes
        prefix or range (then ``bytes``), so they can be handed straight back to ``get``."""
        if prefix is not None and (start is not None or end is not None):
            raise InvalidArgument("scan takes a prefix or a start/end range, not both")
        if not 1 <= page_size <= MAX_SCAN_LIMIT:
            raise InvalidArgument(f"page_size must be in [1, {MAX_SCAN_LIMIT}]")
        if limit is not None and limit < 0:
            raise InvalidArgument("limit must be >= 0")
        base: dict[str, Any] = {}
        if prefix is not None:
            base["prefix"] = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        if start is not None:
            base["start"] = as_key(start)
        if end is not None:
            base["end"] = as_key(end)
        if limit is not None:
            page_size = max(1, min(page_size, limit))
        return merged_scan(self._executor, base, limit, page_size, timeout,
                           key_type_of(prefix, start, end))


    # -- writes ------------------------------------------------------------------------------

    async def put(
        self,
        key: Key,
        value: bytes | str,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
        ttl: float | None = None,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store ``value``; returns its version. ``if_version`` makes it a compare-and-swap,
        ``if_absent`` a create; both raise ``VersionMismatch`` when the condition fails."""
        raw = as_key(key)
        args: dict[str, Any] = {"key": raw, "value": as_value(value, self._limits)}
        if if_version is not None:
            args["if_version"] = as_version(if_version, "if_version")
        if if_absent:
            args["if_absent"] = True
        if ttl is not None:
            args["ttl"] = as_ttl(ttl)
        body = await self._executor.call(
            "put",
            _write_args(args, write_concern),
            keys=(raw,),  # routed as is: checked above, no need to find and check it again
            budget=timeout,
        )
        return int(body["version"])

    async def delete(
        self,
        key: Key,
        *,
        if_version: int | None = None,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Remove ``key``; the result is truthy if something was removed."""
        raw = as_key(key)
        args: dict[str, Any] = {"key": raw}
        if if_version is not None:
            args["if_version"] = as_version(if_version, "if_version")
        body = await self._executor.call(
            "delete",
            _write_args(args, write_concern),
            keys=(raw,),
            budget=timeout,
        )
        version = body.get("version")
        return DeleteResult(bool(body["deleted"]), None if version is None else int(version))

    async def incr(
        self,
        key: Key,
        delta: int = 1,
        *,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> int:
        """Add ``delta`` to the counter under ``key`` (absent = 0); returns the new value.
        Retried after a lost answer only because the shard deduplicates it (the client's
        write session): it is applied once, or ``OutcomeUnknown`` says it may have been."""
        raw = as_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise InvalidArgument(f"delta must be an integer, not {type(delta).__name__}")
        body = await self._executor.call(
            "incr",
            _write_args({"key": raw, "delta": delta}, write_concern),
            budget=timeout,
        )
        return int(body["value"])

    async def expire(self, key: Key, ttl: float, *, timeout: float | None = None) -> int:
        """Make ``key`` expire in ``ttl`` seconds; returns the new version."""
        raw = as_key(key)
        body = await self._executor.call(
            "expire", {"key": raw, "ttl": as_ttl(ttl)}, budget=timeout
        )
        return int(body["version"])

    async def mput(
        self,
        items: Mapping[Key, bytes | str] | Iterable[tuple[Key, bytes | str]],
        *,
        ttl: float | None = None,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> list[int]:
        """Store any number of items. Atomicity holds per chunk within a shard: each shard's
        share is cut into chunks under the node's operation and byte limits, and each chunk is
        one atomic write (use ``batch`` for all-or-nothing). Returns the version of each item
        in input order (the version of the chunk that wrote it)."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        raw_keys = [as_key(k) for k, _ in pairs]
        values = [as_value(v, self._limits) for _, v in pairs]
        if not raw_keys:
            return []
        extra: dict[str, Any] = {} if ttl is None else {"ttl": as_ttl(ttl)}
        _write_args(extra, write_concern)

        async def part(indexes: Part) -> list[int]:
            body = await self._executor.call(
                "mput",
                {**extra, "items": [[raw_keys[i], values[i]] for i in indexes]},
                keys=part_keys(raw_keys, indexes),
                budget=timeout,
            )
            return [int(body["version"])] * len(indexes)

        limits = await node_limits(self._executor, self._limits)
        sizes = [len(k) + len(v) for k, v in zip(raw_keys, values, strict=True)]
        return await run_split(self._executor.router, raw_keys, part, limits=limits,
                               sizes=sizes)

    async def mdelete(
        self,
        keys: Sequence[Key],
        *,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> int:
        """Delete any number of keys (in chunks under the node's limits, each chunk atomic
        within its shard); returns how many existed."""
        raw_keys = [as_key(k) for k in keys]
        if not raw_keys:
            return 0
        extra = _write_args({}, write_concern)

        async def part(indexes: Part) -> list[int]:
            routed = part_keys(raw_keys, indexes)
            body = await self._executor.call(
                "mdelete", {**extra, "keys": routed}, keys=routed, budget=timeout
            )
            # The count is per part: credit it to the part's first key, zero to the rest.
            return [int(body["deleted"])] + [0] * (len(indexes) - 1)

        limits = await node_limits(self._executor, self._limits)
        counts = await run_split(self._executor.router, raw_keys, part, limits=limits,
                                 sizes=[len(k) for k in raw_keys])
        return sum(counts)

    async def batch(
        self,
        ops: Sequence[Mapping[str, Any]],
        *,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Puts and deletes applied all or nothing. Atomicity holds within one shard, so all
        keys must live in the same shard (use a common hash-tag-free prefix design, or check
        with ``same_shard``); otherwise INVALID_ARGUMENT before anything is sent."""
        wire_ops: list[dict[str, Any]] = []
        for op in ops:
            kind = op.get("op")
            if kind not in ("put", "delete"):
                raise InvalidArgument(f"batch op must be 'put' or 'delete', not {kind!r}")
            entry: dict[str, Any] = {"op": kind, "key": as_key(op.get("key"))}
            if kind == "put":
                entry["value"] = as_value(op.get("value"), self._limits)
                if op.get("ttl") is not None:
                    entry["ttl"] = as_ttl(op["ttl"])
                if op.get("if_absent"):
                    entry["if_absent"] = True
            if op.get("if_version") is not None:
                entry["if_version"] = as_version(op["if_version"], "if_version")
            wire_ops.append(entry)
        if not wire_ops:
            raise InvalidArgument("a batch needs at least one op")
        limits = await node_limits(self._executor, self._limits)
        if len(wire_ops) > limits.max_batch_ops:
            raise TooLarge(f"a batch is all or nothing, so it must fit one request: "
                           f"{len(wire_ops)} operations, the node's limit is "
                           f"{limits.max_batch_ops} (mput/mdelete take any number, atomic per "
                           f"chunk)")
        keys = [e["key"] for e in wire_ops]
        if not self.same_shard(keys):
            raise InvalidArgument("batch keys span several shards; a batch is atomic per shard")
        result: dict[str, Any] = await self._executor.call(
            "batch",
            _write_args({"ops": wire_ops}, write_concern),
            budget=timeout,
        )
        return result

    def same_shard(self, keys: Sequence[Key]) -> bool:
        """Whether all ``keys`` live in one shard under the current map (local, no I/O)."""
        router = self._executor.router
        owners = {router.shard_of(as_key(k)) for k in keys}
        return len(owners) <= 1

    # -- optimistic concurrency --------------------------------------------------------------

    async def update(
        self,
        key: Key,
        fn: UpdateFn,
        *,
        attempts: int = DEFAULT_UPDATE_ATTEMPTS,
        ttl: float | None = None,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> Item | None:
        """Read-modify-write without locks: read ``key`` (strong), compute ``fn(item)``
        (item is None when absent; fn may be async; returning None deletes), write it back
        only if nobody wrote in between, and start over when somebody did.

        Returns the item written (None if deleted). The whole loop shares one deadline
        (``timeout``, default 30 s); contention backs off with decorrelated jitter."""
        raw = as_key(key)
        loop = asyncio.get_running_loop()
        budget = 30.0 if timeout is None else timeout
        ends_at = loop.time() + budget
        backoff = DecorrelatedJitterBackoff(base=0.001, cap=0.05, rng=random.Random())
        for attempt in range(1, attempts + 1):
            remaining = ends_at - loop.time()
            if remaining <= 0:
                break
            current = await self.get(raw, consistency="strong", timeout=remaining)
            new_value = fn(current)
            if asyncio.iscoroutine(new_value) or isinstance(new_value, Awaitable):
                new_value = await new_value
            remaining = ends_at - loop.time()
            if remaining <= 0:
                break
            try:
                if new_value is None:
                    if current is None:
                        return None
                    await self.delete(raw, if_version=current.version, timeout=remaining,
                                      write_concern=write_concern)
                    return None
                value = as_value(new_value, self._limits)
                if current is None:
                    version = await self.put(raw, value, if_absent=True, ttl=ttl,
                                             write_concern=write_concern, timeout=remaining)
                else:
                    version = await self.put(raw, value, if_version=current.version, ttl=ttl,
                                             write_concern=write_concern, timeout=remaining)
                return Item(value, version, None)
            except VersionMismatch:
                delay = backoff.compute(attempt)
                await asyncio.sleep(min(delay, max(ends_at - loop.time(), 0)))
        raise Timeout(f"update of {raw!r} did not win a compare-and-swap within the budget")

    # -- cluster -----------------------------------------------------------------------------

    async def ping(self, url: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``{"lsn", "epoch", "role"}`` of the node at ``url`` (status, health checks)."""
        budget = self._executor.timeout if timeout is None else timeout
        answer: dict[str, Any] = await self._executor.pool(url).call("ping", {}, budget)
        return answer

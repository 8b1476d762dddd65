"""Running one request to completion: route, send, and decide what a failure means.

What an op is comes from its spec (``cluster/ops.py``): the keys it routes by, whether it
writes, whether it is idempotent (writes are not, unless their spec says so). Every write is
stamped with a client session (``client_id``/``seq``, ``write_sessions.py``) that the shard
deduplicates, so a write that may already have been applied can be sent again safely: the
shard answers the original result (docs/exactly-once.md).

Three kinds of failure, three answers (redis-py's tree):

- **Redirects** (``NOT_PRIMARY``, ``STALE_MAP``, ``STALE_EPOCH``): the node said "not me";
  the request was not executed. Refresh the map and go again, at most ``max_hops`` (16) times.
  If the map has not changed yet (the coordinator is still failing the shard over), wait a
  jittered backoff before the next hop.
- **Transient** (``UNAVAILABLE``, ``TIMEOUT``, ``OUTCOME_UNKNOWN``, a broken connection):
  retried under the ``Retry`` policy when that cannot apply a write twice: always for reads
  and stamped writes; for an unstamped write (sessions turned off) only if nothing was sent.
- **Definite answers** (``NOT_FOUND``, ``VERSION_MISMATCH``, ``INVALID_ARGUMENT``, ...):
  raised at once. For a stamped write a definite answer after a lost one is still the truth:
  the shard answered it from the first attempt's record if that attempt was applied.

A write that gives up after an attempt that may have been applied raises ``OutcomeUnknown``
("it may have happened"), never the last transient error, which a caller could read as "not
done". ``TOO_STALE`` on an eventual read moves on to the next replica, then to the primary.
Everything runs under one deadline: the caller's ``timeout`` bounds all attempts and sleeps.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp
from shardkv.client.connection import ConnectionFailed, NodePool
from shardkv.client.retry import ExponentialBackoff, Retry
from shardkv.client.routing import Route, RoutedKeys, Router
from shardkv.client.unreachable import name_the_shard
from shardkv.client.write_sessions import WriteSessions
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import (
    InvalidArgument,
    NotPrimary,
    OutcomeUnknown,
    ShardKVError,
    StaleEpoch,
    StaleMap,
    Timeout,
    TooStale,
    Unavailable,
)
from shardkv.cluster.limits import as_key
from shardkv.cluster.ops import OpSpec, spec_of

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_HOPS = 16

REDIRECTS = (NotPrimary, StaleMap, StaleEpoch)


class Regroup(Exception):
    """Raised inside a multi-key call when a map change split its keys across shards: the
    caller regroups what is left and tries again."""


def _maybe_executed(error: BaseException) -> bool:
    """Whether the failed attempt may have been applied (its outcome is unknown)."""
    if isinstance(error, ConnectionFailed):
        return error.maybe_executed
    return isinstance(error, Timeout | OutcomeUnknown)


def _gave_up(op: str, error: ShardKVError, uncertain: bool) -> ShardKVError:
    """The error to raise when a write stops: if an attempt may have been applied and the
    last error does not settle it, say so (OUTCOME_UNKNOWN) instead of a transient error
    that reads as "not done"."""
    if not uncertain or isinstance(error, OutcomeUnknown) or not error.retryable:
        return error
    unknown = OutcomeUnknown(
        f"{op}: gave up ({error.code.value}: {error.message}); an earlier attempt may have "
        "been applied, so the write may have happened", cause=error.code.value)
    unknown.__cause__ = error
    return unknown


class Executor:
    """Owns the connection pools and runs requests through the router."""

    def __init__(
        self,
        router: Router,
        session: aiohttp.ClientSession,
        *,
        retry: Retry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_hops: int = DEFAULT_MAX_HOPS,
        pool_size: int = 1,
        connect_timeout: float = 2.0,
        sessions: WriteSessions | None = None,
    ) -> None:
        self.router = router
        # None turns write stamping off (``Client(exactly_once=False)``, the benchmark's
        # baseline): writes are then retried only when the request was never sent.
        self.sessions = sessions
        # The default is bounded by the call's deadline more than by the count: a failover
        # takes seconds, and a client that gives up after 200 ms of backoff would see it.
        self.retry = retry if retry is not None else Retry(retries=64)
        self.timeout = timeout
        self.max_hops = max_hops
        self._session = session
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pools: dict[str, NodePool] = {}
        self._hop_backoff = ExponentialBackoff(base=0.01, cap=0.25)
        # Answers per node URL: which nodes actually served (replica reads, failover tests).
        self.served_by: collections.Counter[str] = collections.Counter()
        self.hops = 0  # redirects followed, over the client's life
        # Told the keys of every write before it is sent and after it ends (None: keys not
        # known, e.g. a shard-wide op): the read cache drops them (client/read_cache.py).
        self.write_listener: Callable[[Sequence[bytes] | None], None] | None = None
        self.abandoned = 0  # requests given up on a deposed primary (observability, tests)
        self._loop: asyncio.AbstractEventLoop | None = None
        router.on_install.append(self._abandon_on_deposed_primaries)

    def pool(self, url: str) -> NodePool:
        pool = self._pools.get(url)
        if pool is None:
            pool = NodePool(
                url, self._session, size=self._pool_size, connect_timeout=self._connect_timeout
            )
            self._pools[url] = pool
        return pool

    def _abandon_on_deposed_primaries(self, previous: ClusterMap | None, new: ClusterMap) -> None:
        """A newer map names another primary for a shard: requests still waiting on the old
        one cannot be acknowledged there any more (it is fenced by the new epoch), and a
        frozen old primary would hold them until the caller's deadline. Fail them now as
        "outcome unknown"; the retry goes to the new primary with the same session stamp,
        which answers the original result if the first attempt was applied after all."""
        if previous is None or self.sessions is None:
            # Without session stamps a write that may have been applied cannot be sent
            # again (it would give up as OUTCOME_UNKNOWN), while the old primary may still
            # answer it definitely (NOT_PRIMARY after a planned switchover): leave it be;
            # the heartbeat still ends the wait on a frozen node.
            return
        for shard_id in previous.shards:
            old = previous.primary_of(shard_id)
            if old is None or (pool := self._pools.get(old.url)) is None:
                continue
            now = new.primary_of(shard_id)
            if now is None or now.url == old.url:
                continue
            self.abandoned += pool.abandon_pending(
                f"{shard_id}'s primary moved to {now.url} in map version {new.version}")

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        await asyncio.gather(*(p.close() for p in pools.values()), return_exceptions=True)

    async def _after_redirect(self, error: ShardKVError, seen_version: int, hops: int,
                              remaining: float) -> None:
        """Bring the map forward after a redirect; back off if it did not move."""
        if self.router.direct:
            await asyncio.sleep(min(remaining, self._hop_backoff.compute(hops)))
            return
        try:
            await self.router.refresh()
        except Unavailable:
            pass  # coordinators unreachable for now: the backoff below still applies
        if self.router.version <= seen_version:
            delay = min(remaining, self._hop_backoff.compute(hops))
            await self.router.wait_newer(seen_version, max(delay, 0.0))

    async def call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        keys: Sequence[bytes] | None = None,
        shard: str | None = None,
        eventual: bool = False,
        budget: float | None = None,
        on_route: Callable[[Route], None] | None = None,
    ) -> Any:
        """Run ``op`` on the shard that owns its keys (all in one shard; by default the keys
        its spec finds in ``args``) or on ``shard``.

        ``ring_version`` is added to ``args`` from the map used for each attempt; a write
        gets its session stamp, the same for every attempt.
        """
        spec = spec_of(op)
        if keys is None and shard is None:
            keys = [as_key(k) for k in spec.keys_of(args)]
        if not spec.writes:
            return await self._run(spec, args, keys or (), shard, eventual, budget, on_route,
                                   retry_safe=spec.idempotent)
        listener = self.write_listener
        touched = None
        if listener is not None:
            touched = list(keys) if keys else None
            listener(touched)
        sessions = self.sessions
        slot = sessions.acquire() if sessions is not None else None
        try:
            if slot is None:
                return await self._run(spec, args, keys or (), shard, eventual, budget,
                                       on_route, retry_safe=spec.idempotent)
            # The same stamp for every attempt of this write (write_sessions.py).
            stamped = {**args, "client_id": slot.client_id, "seq": slot.seq}
            return await self._run(spec, stamped, keys or (), shard, eventual, budget,
                                   on_route, retry_safe=True)
        finally:
            if sessions is not None and slot is not None:
                sessions.release(slot)
            if listener is not None:
                listener(touched)

    async def _run(
        self,
        spec: OpSpec,
        args: dict[str, Any],
        keys: Sequence[bytes],
        shard: str | None,
        eventual: bool,
        budget: float | None,
        on_route: Callable[[Route], None] | None,
        *,
        retry_safe: bool,
    ) -> Any:
        op = spec.name
        loop = self._loop
        if loop is None:  # bound at the first call: the pools' connections live on it too
            loop = self._loop = asyncio.get_running_loop()
        if budget is None:
            budget = self.timeout
        if budget <= 0:
            raise InvalidArgument(f"timeout must be > 0, got {budget}")
        ends_at = loop.time() + budget
        failures = 0
        hops = 0
        uncertain = False  # an attempt of this write may have been applied
        self.retry.backoff.reset()
        while True:
            remaining = ends_at - loop.time()
            if remaining <= 0:
                raise _gave_up(op, Timeout(f"{op} did not complete within {budget:.3f}s"),
                               uncertain)
            seen_version = self.router.version
            try:
                target = self._target_shard(keys, shard)
                if eventual:
                    candidates = self.router.read_candidates(target)
                else:
                    primary = self.router.primary(target)
            except Regroup:
                if uncertain:  # re-split parts would carry new stamps: not safe to resend
                    split = _gave_up(op, Unavailable("the shard map split this request's keys"),
                                     uncertain)
                    raise split  # noqa: B904 (_gave_up chains the cause itself)
                raise
            except Unavailable as error:
                # No map or no primary yet: the same as a node being unavailable.
                failures += 1
                delay = self.retry.delay_for(error, failures, remaining)
                if delay is None:
                    raise _gave_up(op, error, uncertain)  # noqa: B904 (chained inside)
                await self._refresh_quietly()
                await asyncio.sleep(delay)
                continue
            try:
                if eventual:
                    return await self._try_candidates(
                        op, args, candidates, ends_at, on_route=on_route
                    )
                # A strong read or a write: the primary, and nothing else to try.
                result = await self._send(op, args, primary, remaining, on_route)
                self.served_by[primary.url] += 1
                return result
            except REDIRECTS as error:
                hops += 1
                self.hops += 1
                if hops > self.max_hops:
                    raise _gave_up(op, error, uncertain)  # noqa: B904 (chained inside)
                await self._after_redirect(error, seen_version, hops, ends_at - loop.time())
            except ShardKVError as error:
                maybe = spec.writes and _maybe_executed(error)
                uncertain = uncertain or maybe
                if not error.retryable or (maybe and not retry_safe):
                    raise _gave_up(op, name_the_shard(error, self.router, target),  # noqa: B904
                                   uncertain)  # (chained inside)
                failures += 1
                delay = self.retry.delay_for(error, failures, ends_at - loop.time())
                if delay is None:
                    raise _gave_up(op, name_the_shard(error, self.router, target),  # noqa: B904
                                   uncertain)  # (chained inside)
                if isinstance(error, ConnectionFailed | OutcomeUnknown):
                    await self._refresh_quietly()
                await asyncio.sleep(delay)

    def _target_shard(self, keys: Sequence[bytes], shard: str | None) -> str:
        if shard is not None:
            return shard
        if not keys:
            raise ValueError("a routed call needs keys or a shard")
        if (type(keys) is RoutedKeys and keys.shard is not None
                and keys.map_version == self.router.version):
            return keys.shard  # grouped under this very map: hashing again would agree
        owner = self.router.shard_of(keys[0])
        for key in keys[1:]:
            if self.router.shard_of(key) != owner:
                raise Regroup()
        return owner

    async def _refresh_quietly(self) -> None:
        if self.router.direct:
            return
        try:
            await self.router.refresh()
        except Unavailable:
            pass

    def _send(self, op: str, args: dict[str, Any], route: Route, budget: float,
              on_route: Callable[[Route], None] | None) -> Coroutine[Any, Any, Any]:
        """One attempt on ``route`` (the caller awaits it): ``args`` with the ring version
        of the map that routed it, on the node's next connection."""
        if route.ring_version is not None:
            args = {**args, "ring_version": route.ring_version}
        if on_route is not None:
            on_route(route)
        return self.pool(route.url).connection().call(op, args, budget)

    async def _try_candidates(
        self,
        op: str,
        args: dict[str, Any],
        candidates: list[Route],
        ends_at: float,
        *,
        on_route: Callable[[Route], None] | None,
    ) -> Any:
        """Send to the first candidate; on TOO_STALE (a replica behind the bound) or a replica
        that cannot be reached, move to the next. The primary is always last."""
        loop = asyncio.get_running_loop()
        last_error: ShardKVError | None = None
        for index, route in enumerate(candidates):
            remaining = ends_at - loop.time()
            if remaining <= 0:
                break
            try:
                result = await self._send(op, args, route, remaining, on_route)
            except (TooStale, ConnectionFailed, NotPrimary) as error:
                is_last = index == len(candidates) - 1
                if is_last or route.is_primary:
                    raise
                # A replica that is too stale, down, or that just turned primary elsewhere:
                # the read can go to the next candidate without any wait.
                last_error = error
                continue
            self.served_by[route.url] += 1
            return result
        if last_error is not None:
            raise last_error
        raise Timeout(f"{op} did not complete before the deadline")

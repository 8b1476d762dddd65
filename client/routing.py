"""Key -> shard -> node, from a cached copy of the cluster map.

The client routes every key itself with the shared ring function (``shard_for_key``), so the
coordinators stay off the data path. The map is cached and kept fresh two ways:

- a background watch long-polls ``GET /v1/map?since=V`` on one coordinator after another, so a
  failover usually reaches the client before its next request does;
- a node that answers ``STALE_MAP`` or ``NOT_PRIMARY`` makes the caller ``refresh()`` at once
  (concurrent refreshes are coalesced into one fetch).

Strong reads and writes go to the shard's primary. Eventual reads go to a replica chosen
round-robin; the executor falls back to the next replica, then the primary, on ``TOO_STALE``.

When no coordinator answers, the client keeps routing with its cached map (the shards'
primaries keep serving without the coordinators, see ``docs/replication.md``): a failed
fetch is remembered for ``MAP_RETRY_AFTER_FAILURE_S``, and refreshes asked for meanwhile fail
at once with ``UNAVAILABLE`` instead of waiting on unreachable coordinators again.

Direct mode (``nodes=[url]``) has no coordinator: a single standalone node owns every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from shardkv.cluster import internal_routes as routes
from shardkv.cluster import wire
from shardkv.cluster.cluster_map import NODE_UP, ClusterMap
from shardkv.cluster.errors import Unavailable
from shardkv.cluster.ring import owner_function, shard_for_key

log = logging.getLogger(__name__)

DIRECT_SHARD = "direct"
WATCH_POLL_SECONDS = 30.0  # how long one long-poll may hang before we ask again
MAP_RETRY_AFTER_FAILURE_S = 1.0  # after no coordinator answered, refreshes fail fast this long


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes. ``ring_version`` travels with keyed requests so a node with a
    newer ring can answer STALE_MAP; None in direct mode."""

    shard: str
    url: str
    ring_version: int | None
    is_primary: bool


class RoutedKeys(list[bytes]):
    """Keys a caller has already routed: every one is owned by ``shard`` in the map of
    version ``map_version``. The executor sends them there without hashing each key again
    while its map is still that version (a multi-key call groups its keys by shard first, and
    hashing them twice was a measurable share of an mput's client CPU: issue 17)."""

    __slots__ = ("map_version", "shard")

    def __init__(self, keys: Iterable[bytes], shard: str | None, map_version: int) -> None:
        super().__init__(keys)
        self.shard = shard
        self.map_version = map_version


class Router:
    """The cached map and the routing questions asked of it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        coordinators: list[str] | None = None,
        *,
        nodes: list[str] | None = None,
        fetch_timeout: float = 2.0,
    ) -> None:
        if bool(coordinators) == bool(nodes):
            raise ValueError("give either coordinator URLs or (direct mode) one node URL")
        if nodes is not None and len(nodes) != 1:
            raise ValueError("direct mode takes exactly one node URL")
        self._session = session
        self.coordinators = [u.rstrip("/") for u in coordinators or []]
        self.direct_url = nodes[0].rstrip("/") if nodes else None
        self._fetch_timeout = fetch_timeout
        self._map: ClusterMap | None = None
        # Worked out once per map, not per request (issue 17): the key -> shard function of
        # its ring and each shard's primary route. A map is not changed once it is ours (a
        # newer one replaces it), so they hold while ``_map`` is the map they were made for.
        self._routes_of: ClusterMap | None = None
        self._owner: Callable[[bytes], str] | None = None
        self._primaries: dict[str, Route] = {}
        self._changed = asyncio.Condition()
        self._refreshing: asyncio.Task[ClusterMap] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._rr = itertools.count(random.randrange(1 << 16))
        self._coordinator_rr = itertools.count(random.randrange(1 << 16))
        self.refreshes = 0  # fetches triggered by errors (observability, tests)
        self._fetch_failed_at: float | None = None  # loop time of the last failed fetch
        self.map_fetch_failures = 0
        # Called with (previous map or None, new map) each time a newer map is adopted.
        self.on_install: list[Callable[[ClusterMap | None, ClusterMap], None]] = []

    @property
    def coordinators_reachable(self) -> bool:
        """False since a fetch found no coordinator, until one answers again."""
        return self._fetch_failed_at is None

    # -- the map -----------------------------------------------------------------------------

    @property
    def direct(self) -> bool:
        return self.direct_url is not None

    @property
    def map(self) -> ClusterMap | None:
        return self._map

    @property
    def version(self) -> int:
        return self._map.version if self._map is not None else -1

    def install(self, new_map: ClusterMap) -> bool:
        """Adopt ``new_map`` if it is newer than ours (maps only move forward)."""
        previous = self._map
        if previous is not None and new_map.version <= previous.version:
            return False
        self._map = new_map
        for listener in self.on_install:
            listener(previous, new_map)
        return True

    async def start(self, *, watch: bool = True) -> None:
        """Fetch the first map (direct mode: nothing to fetch) and start the watch."""
        if self.direct:
            return
        await self.refresh()
        if watch and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def close(self) -> None:
        for task in (self._watch, self._refreshing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._watch = None

    async def _fetch_from(self, url: str, since: int | None, wait: float) -> ClusterMap | None:
        params = None
        if since is not None:
            params = {"since": str(since), "timeout": str(int(wait))}
        timeout = aiohttp.ClientTimeout(total=wait + self._fetch_timeout)
        async with self._session.get(
            url + routes.MAP,
            params=params,
            timeout=timeout,
            headers={"Accept": wire.JSON},
        ) as resp:
            if resp.status == 304:
                return None
            if resp.status != 200:
                raise Unavailable(f"coordinator {url} answered HTTP {resp.status}")
            body = await resp.read()
        if resp.content_type == wire.MSGPACK:
            return ClusterMap.from_msgpack(body)
        return ClusterMap.from_json(body)

    async def _fetch_any(self) -> ClusterMap:
        """The map from the first coordinator that answers (starting from a rotating one)."""
        errors: list[str] = []
        start = next(self._coordinator_rr)
        for i in range(len(self.coordinators)):
            url = self.coordinators[(start + i) % len(self.coordinators)]
            try:
                fetched = await self._fetch_from(url, None, 0.0)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, Unavailable) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if fetched is not None:
                return fetched
        raise Unavailable("no coordinator answered: " + "; ".join(errors))

    async def refresh(self) -> ClusterMap:
        """Fetch the map now. Callers that arrive while a fetch is running share it."""
        if self.direct:
            raise RuntimeError("direct mode has no map to refresh")
        failed_at = self._fetch_failed_at
        now = asyncio.get_running_loop().time()
        if (self._map is not None and failed_at is not None
                and now - failed_at < MAP_RETRY_AFTER_FAILURE_S):
            raise Unavailable("no coordinator answered a moment ago; routing with the cached "
                              f"map (version {self._map.version})",
                              cached_map_version=self._map.version)
        task = self._refreshing
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._do_refresh())
            self._refreshing = task
        return await asyncio.shield(task)

    async def _do_refresh(self) -> ClusterMap:
        try:
            fetched = await self._fetch_any()
        except Unavailable:
            self._fetch_failed_at = asyncio.get_running_loop().time()
            self.map_fetch_failures += 1
            raise
        self._fetch_failed_at = None
        await self._adopt(fetched)
        assert self._map is not None
        return self._map

    async def _adopt(self, fetched: ClusterMap) -> None:
        if self.install(fetched):
            async with self._changed:
                self._changed.notify_all()

    async def wait_newer(self, version: int, within: float) -> bool:
        """Wait until the cached map is newer than ``version``; False after ``within`` s."""
        async with self._changed:
            try:
                async with asyncio.timeout(within):
                    await self._changed.wait_for(lambda: self.version > version)
            except TimeoutError:
                return False
        return True

    async def _watch_loop(self) -> None:
        failures = 0
        while True:
            url = self.coordinators[next(self._coordinator_rr) % len(self.coordinators)]
            try:
                fetched = await self._fetch_from(url, self.version, WATCH_POLL_SECONDS)
                failures = 0
                self._fetch_failed_at = None
                if fetched is not None:
                    await self._adopt(fetched)
                    # A coordinator that answers at once with an old map does not long-poll:
                    # do not spin on it.
                    if fetched.version <= self.version:
                        await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a coordinator down or restarting: try the next one
                failures += 1
                log.debug("map watch on %s failed: %r", url, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)) * random.random())

    # -- routing -----------------------------------------------------------------------------

    def _forget_routes(self) -> None:
        """Start the per-map caches afresh for the map now held."""
        cmap = self._map
        self._routes_of = cmap
        self._owner = owner_function(cmap.ring) if cmap is not None and cmap.ring.shards \
            else None
        self._primaries = {}

    def shard_of(self, key: bytes) -> str:
        if self._routes_of is not self._map:
            self._forget_routes()
        owner = self._owner
        if owner is not None:
            return owner(key)
        if self.direct:
            return DIRECT_SHARD
        if self._map is None:
            raise Unavailable("no cluster map yet")
        return shard_for_key(self._map, key)  # a ring with no shard: says so

    def ring_version(self) -> int | None:
        if self.direct or self._map is None:
            return None
        return self._map.ring.version

    def primary(self, shard: str) -> Route:
        if self._routes_of is not self._map:
            self._forget_routes()
        route = self._primaries.get(shard)
        if route is None:
            route = self._primaries[shard] = self._primary_route(shard)
        return route

    def _primary_route(self, shard: str) -> Route:
        if self.direct_url is not None:
            return Route(DIRECT_SHARD, self.direct_url, None, True)
        cmap = self._require_map()
        info = cmap.shards.get(shard)
        if info is None:
            raise Unavailable(f"shard {shard} is not in map version {cmap.version}", shard=shard)
        node = cmap.primary_of(shard)
        if node is None:
            raise Unavailable(
                f"shard {shard} has no primary in map version {cmap.version}", shard=shard
            )
        return Route(shard, node.url, cmap.ring.version, True)

    def read_candidates(self, shard: str) -> list[Route]:
        """Eventual-read targets: the replicas that are up, rotated so load spreads, then
        the primary as the last resort."""
        primary = self.primary(shard)
        if self.direct:
            return [primary]
        cmap = self._require_map()
        info = cmap.shards[shard]
        replicas = [
            cmap.nodes[m].url
            for m in info.members
            if m != info.primary and m in cmap.nodes and cmap.nodes[m].status == NODE_UP
        ]
        if replicas:
            turn = next(self._rr) % len(replicas)
            replicas = replicas[turn:] + replicas[:turn]
        return [Route(shard, url, cmap.ring.version, False) for url in replicas] + [primary]

    def shards(self) -> list[str]:
        if self.direct:
            return [DIRECT_SHARD]
        return sorted(self._require_map().shards)

    def _require_map(self) -> ClusterMap:
        if self._map is None:
            raise Unavailable("no cluster map yet")
        return self._map

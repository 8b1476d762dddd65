"""``Client.watch``: one stream of key events merged from every shard that can hold them.

Each shard is followed by its own task over a ``/v1/watch`` WebSocket to the shard's
primary. The task remembers the last version it handed on for its shard (an events frame
holds whole entries, and a progress frame says everything up to its version was sent), and
after any break (a dropped connection, ``SLOW_CONSUMER``, ``NOT_PRIMARY`` after a failover,
a node restart) it refreshes the map and resumes from exactly that version: the node sends
every write after it, so the caller sees no gap and, since anything at or below it is
dropped, no duplicate. Errors that retrying cannot fix (``COMPACTED``, ``INVALID_ARGUMENT``)
end the iteration by raising.

Resharding (docs/watch.md, "Resharding"): the watch follows map changes (the router's
``on_install``). A shard that joins the ring is followed from the LSN where it began owning
its arcs (recorded with the flip); a shard that leaves is followed up to the LSN where it
stopped, then let go; if the map retires it first, the follower goes on against its
parked members (``retired_shard.py``), within a bound. Events a migration writes (the copy
on a target, the clean-up on a source) are dropped by ownership (``cluster/ring_history.py``),
judged with a map at least as new as the ring the node knew when it sent them
(``ring_version`` in the frame). A key's events from its new owner wait until its old
owner's events up to the flip were queued, so per-key order holds across the move.

The shards' frames meet in one bounded queue: a caller that stops reading stalls the shard
tasks, the node's buffer for the watch fills and the node cuts the watch off with
``SLOW_CONSUMER``; the task then resumes from its last version when the caller reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from shardkv.client.eventual_watch import EventualWatch
from shardkv.client.retired_shard import (
    RETIRED_RETRY_S,
    RETIRED_SILENCE_S,
    MemberExhausted,
    RetiredShard,
)
from shardkv.client.retry import DecorrelatedJitterBackoff
from shardkv.client.routing import Router
from shardkv.cluster.cluster_map import ClusterMap
from shardkv.cluster.errors import (
    Compacted,
    InvalidArgument,
    ShardKVError,
    Unavailable,
    error_from_dict,
)
from shardkv.cluster.ring import shard_for_key
from shardkv.cluster.ring_history import RingHistory
from shardkv.cluster.wire import pack, unpack

QUEUE_FRAMES = 256
MAX_FRAME_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change (``put``, ``delete``, ``expire``), or with ``progress=True`` a
    ``progress`` mark: every matching write of ``shard`` up to ``version`` was delivered.
    ``prev_version`` is the version the write replaced (None: the key was absent or had
    expired; for ``expire``, the version that expired)."""

    type: str
    key: bytes | None
    value: bytes | None
    version: int
    shard: str
    prev_version: int | None = None
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The CLI's one-line form (bytes as UTF-8 text where they are)."""
        out: dict[str, Any] = {"type": self.type, "version": self.version, "shard": self.shard}
        if self.key is not None:
            out["key"] = self.key
            out["prev_version"] = self.prev_version
        if self.value is not None:
            out["value"] = self.value
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        return out


def watch_request(key: Any, prefix: Any, start: Any, end: Any, values: bool,
                  progress_interval_ms: int | None) -> dict[str, Any]:
    """The node's request frame (the node checks it again; this fails fast on obvious
    mistakes before any connection is made)."""
    if sum(x is not None for x in (key, prefix, start)) != 1 or (
            end is not None and start is None):
        raise InvalidArgument("watch takes exactly one of key=, prefix=, or start= (with end=)")
    request: dict[str, Any] = {"values": bool(values)}
    for name, value in (("key", key), ("prefix", prefix), ("start", start), ("end", end)):
        if value is not None:
            request[name] = value.encode() if isinstance(value, str) else bytes(value)
    if progress_interval_ms is not None:
        request["progress_interval_ms"] = progress_interval_ms
    return request


def start_versions(shards: list[str], start_version: int | Mapping[str, int] | None
                   ) -> dict[str, int | None]:
    if start_version is None or isinstance(start_version, Mapping):
        given = dict(start_version or {})
        return {s: given.get(s) for s in shards}
    if type(start_version) is not int or start_version < 0:
        raise InvalidArgument("start_version must be a non-negative integer (or per-shard map)")
    return dict.fromkeys(shards, start_version)


class _ShardFollower:
    """Follows one shard's watch, resuming from ``last`` after every break. ``last`` is
    also what was queued: every matching event of the shard up to it is in the queue."""

    def __init__(self, merge: _Merge, shard: str, last: int | None) -> None:
        self.merge = merge
        self.router = merge.router
        self.session = merge.session
        self.eventual = merge.eventual
        self.tried: list[str] = []  # members failed in a row (eventual: the next is tried)
        self.shard = shard
        self.request = merge.request
        self.last = last
        self.queue = merge.queue
        self.resumes = 0
        self.done = False

    async def run(self) -> None:
        """Follow until cancelled or let go; an error retrying cannot fix goes to the queue."""
        try:
            await self._run()
            self.merge.left(self)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # never die silently: the caller would wait forever
            await self.queue.put(("error", exc))
        finally:
            self.done = True
            self.merge.notify()

    async def _run(self) -> None:
        backoff = DecorrelatedJitterBackoff(0.05, 2.0)
        failures = 0
        while True:
            try:
                if await self._follow_once():
                    return
                failures = 0
            except Compacted as error:
                if not await self.merge.across_jump(self, error):
                    await self.queue.put(("error", error))
                    return
            except ShardKVError as error:
                # A retired member's refusal is not the shard's: the next one may serve it.
                if not error.retryable and self.shard not in self.merge.retired:
                    await self.queue.put(("error", error))
                    return
            except aiohttp.ClientConnectorError:
                self._refused()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, MemberExhausted):
                pass
            if self.merge.let_go(self):
                return
            retired = self.merge.retired.get(self.shard)
            if retired is not None and retired.given_up(asyncio.get_running_loop().time()):
                await self.queue.put(("error", self.merge.gap_error(self.shard)))
                return
            failures += 1
            self.resumes += 1
            delay = backoff.compute(failures) if failures > 1 else 0.0
            if retired is not None:  # no map names it: its next member, soon (bounded)
                delay = min(delay, RETIRED_RETRY_S)
            elif not self.router.direct:
                with contextlib.suppress(ShardKVError, aiohttp.ClientError, OSError,
                                         TimeoutError):
                    await self.router.refresh()
            await asyncio.sleep(delay)

    def _refused(self) -> None:
        retired = self.merge.retired.get(self.shard)
        if retired is not None and retired.tried:
            retired.refused_by(retired.tried[-1])

    async def _follow_once(self) -> bool:
        """One connection; True once this shard has nothing more for the watch (it left
        the ring and everything up to its crossing LSN was queued)."""
        retired = self.merge.retired.get(self.shard)
        if retired is not None:
            url, silence = retired.next_url(), RETIRED_SILENCE_S
        elif self.eventual is None:
            url = self.router.primary(self.shard).url.rstrip("/") + "/v1/watch"
            silence = None
        else:
            url = self.eventual.url(self.router, self.shard, self.tried)
            self.tried.append(url)
            silence = self.eventual.silence_s
        async with asyncio.timeout(silence):  # a paused member never answers the upgrade
            ws = await self.session.ws_connect(
                url, max_msg_size=MAX_FRAME_BYTES, compress=0, heartbeat=30.0,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
        async with ws:
            await ws.send_bytes(pack({**self.request, "start_version": self.last}))
            while (msg := await ws.receive(silence)).type is aiohttp.WSMsgType.BINARY:
                frame = unpack(msg.data)
                await self._take(frame, retired)
                if self.merge.let_go(self):
                    return True
                if frame.get("type") == "progress" and self.shard in self.merge.retired:
                    # Its history is all sent and nothing is written to a retired shard.
                    raise MemberExhausted(url)
        return False

    async def _take(self, frame: dict[str, Any], retired: RetiredShard | None = None) -> None:
        kind = frame.get("type")
        if kind in ("events", "progress"):
            self.tried.clear()  # this member serves the watch
            if retired is not None:
                retired.served()
        if kind == "events":
            last = self.last if self.last is not None else -1
            events = [e for e in frame["events"] if e["version"] > last]
            if retired is not None:  # a parked member no longer knows its shard's name
                for event in events:
                    event["shard"] = self.shard
            if events:
                await self.merge.deliver(self, frame.get("ring_version"), events)
            self.last = max(last, int(frame["version"]))
            self.merge.notify()
        elif kind == "progress":
            version = int(frame["version"])
            if self.last is None or version > self.last:
                self.last = version
                self.merge.notify()
            shard = self.shard if retired is not None else frame.get("shard", self.shard)
            await self.queue.put(("progress", (shard, version)))
        elif kind == "created":
            if self.last is None:
                self.last = int(frame["start_version"])
        elif kind == "error":
            raise error_from_dict(frame)


MAP_CATCH_UP_S = 30.0


class _Merge:
    """The followers of one watch, kept in step with the map."""

    def __init__(self, router: Router, session: aiohttp.ClientSession,
                 request: dict[str, Any], eventual: EventualWatch | None = None) -> None:
        self.router = router
        self.session = session
        self.request = request
        self.eventual = eventual  # None: the primaries only (eventual_watch.py)
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_FRAMES)
        self.followers: dict[str, _ShardFollower] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.leaving: dict[str, int] = {}  # shard -> LSN after which it has nothing for us
        self.retired: dict[str, RetiredShard] = {}  # followed past the map that dropped it
        cmap = router.map
        self.history = None if router.direct or cmap is None else RingHistory(cmap)
        self.since_ring = 0 if cmap is None else cmap.ring.version
        self._moved = asyncio.Event()
        self._failing: set[asyncio.Task[None]] = set()

    def start(self, starts: dict[str, int | None]) -> None:
        for shard, start in starts.items():
            joined = None if self.history is None else self.history.joined(shard)
            if start is not None and joined is not None and start < joined:
                start = joined  # before it joined the ring, a shard held only copies
            self._follow(shard, start)
        if self.history is not None:
            self.router.on_install.append(self._on_install)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.router.on_install.remove(self._on_install)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _follow(self, shard: str, start: int | None) -> None:
        follower = _ShardFollower(self, shard, start)
        self.followers[shard] = follower
        self.tasks[shard] = asyncio.create_task(follower.run(), name=f"watch-{shard}")

    def notify(self) -> None:
        """A follower moved on (or ended): wake the ones waiting for a handover."""
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    # -- the map -------------------------------------------------------------------------

    def _on_install(self, previous: ClusterMap | None, new: ClusterMap) -> None:
        history = self.history = RingHistory(new)
        since, self.since_ring = self.since_ring, new.ring.version
        wanted = watched_shards(new, self.request)
        for shard in sorted(wanted):
            follower = self.followers.get(shard)
            if follower is not None and not follower.done and shard in self.retired:
                continue  # a removed shard of that name is still read: this one after (left)
            self.leaving.pop(shard, None)
            self.retired.pop(shard, None)
            if follower is None or follower.done:
                flips = [f.lsns[shard] for f in history.flips
                         if f.after.version > since and shard in f.lsns]
                self._follow(shard, flips[0] if flips else None)
        for shard, follower in list(self.followers.items()):
            if shard in wanted or shard in self.leaving or follower.done:
                continue
            crossing = history.crossing(shard, since)
            if crossing is not None:
                self.leaving[shard] = crossing
        for shard, follower in list(self.followers.items()):
            if shard in new.shards or follower.done or shard in self.retired:
                continue
            if not self.let_go(follower):
                # Retired from the map before the watch had its writes up to the flip:
                # its parked members still hold them (retired_shard.py).
                retired = None if self.leaving.get(shard) is None else RetiredShard.of(
                    previous, shard, asyncio.get_running_loop().time())
                if retired is not None:
                    self.retired[shard] = retired
                    continue
                self._fail(self.gap_error(shard))
            self.tasks[shard].cancel()
            follower.done = True
        self.notify()

    def left(self, follower: _ShardFollower) -> None:
        """``follower`` returned. If it read a retired shard to its crossing and a shard of
        the same name joined the ring meanwhile (ids are reused), follow the new one from
        where it joined."""
        shard = follower.shard
        if (self.retired.pop(shard, None) is None or not self.let_go(follower)
                or self.followers.get(shard) is not follower or self.history is None
                or (cmap := self.router.map) is None
                or shard not in watched_shards(cmap, self.request)):
            return
        follower.done = True
        self.leaving.pop(shard, None)
        self._follow(shard, self.history.joined(shard))

    def gap_error(self, shard: str) -> Unavailable:
        return Unavailable(
            f"shard {shard} left the cluster before this watch received its writes up to "
            f"version {self.leaving.get(shard)}; the watch cannot resume without a gap")

    def _fail(self, error: ShardKVError) -> None:
        """End the watch with ``error`` (from a map listener, which cannot wait for room in
        the queue)."""
        task = asyncio.get_running_loop().create_task(self.queue.put(("error", error)))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)

    def let_go(self, follower: _ShardFollower) -> bool:
        """Whether ``follower`` has queued everything its shard owes the watch."""
        crossing = self.leaving.get(follower.shard)
        return crossing is not None and follower.last is not None and follower.last >= crossing

    async def _map_at_least(self, ring_version: int) -> RingHistory:
        """A map whose ring is at least ``ring_version`` (the node's, when it sent a frame)."""
        deadline = asyncio.get_running_loop().time() + MAP_CATCH_UP_S
        while (self.router.ring_version() or 0) < ring_version:
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(f"no map with ring version {ring_version} yet")
            with contextlib.suppress(ShardKVError, aiohttp.ClientError, OSError,
                                     TimeoutError):
                await self.router.refresh()
            if (self.router.ring_version() or 0) < ring_version:
                await self.router.wait_newer(self.router.version, 0.5)
        assert self.history is not None
        return self.history

    async def across_jump(self, follower: _ShardFollower, error: Compacted) -> bool:
        """``COMPACTED`` right after a migration raised this shard's LSN floor: if the
        follower got everything up to where the log stopped before the jump, nothing lies
        between that and the floor, so it resumes at the floor. The map may show the jump
        a moment after the node did: wait for it, within a bound."""
        floor = error.details.get("compact_version")
        if self.history is None or not isinstance(floor, int) or follower.last is None:
            return False
        deadline = asyncio.get_running_loop().time() + MAP_CATCH_UP_S
        while True:
            cmap = self.router.map
            records = [] if cmap is None else [
                r for r in (cmap.migration, *cmap.migrations)
                if r is not None and r.lsn_floor == floor and follower.shard in r.targets]
            for record in records:
                jumped_from = record.floor_from.get(follower.shard)
                if jumped_from is not None and follower.last >= jumped_from:
                    follower.last = floor
                    return True
            if records or asyncio.get_running_loop().time() > deadline:
                return False
            with contextlib.suppress(ShardKVError, aiohttp.ClientError, OSError,
                                     TimeoutError):
                await self.router.refresh()
            await self.router.wait_newer(self.router.version, 0.5)

    # -- events --------------------------------------------------------------------------

    async def deliver(self, follower: _ShardFollower, ring_version: int | None,
                      events: list[dict[str, Any]]) -> None:
        """Queue the users' events of one frame: drop what a migration wrote, and hold a
        moved key's first events until its old owner's were queued."""
        if self.history is None:
            await self.queue.put(("events", events))
            return
        history = await self._map_at_least(ring_version or 0)
        shard = follower.shard
        # A handover can only be pending while another shard's follower has not queued its
        # events up to a flip's crossing: otherwise skip the per-event look.
        handover = any(not self._queued(other, lsn) for flip in history.flips
                       for other, lsn in flip.lsns.items() if other != shard)
        ready: list[dict[str, Any]] = []
        for event in events:
            key, version = bytes(event["key"]), int(event["version"])
            if not history.owned(shard, key, version):
                continue  # a migration's copy or clean-up
            came = history.arrival(shard, key, version) if handover else None
            if came is not None and not self._queued(*came):
                if ready:
                    await self.queue.put(("events", ready))
                    ready = []
                follower.last = max(follower.last or 0, version - 1)
                self.notify()
                while not self._queued(*came):
                    await self._moved.wait()
                history = self.history or history
            ready.append(event)
        if ready:
            await self.queue.put(("events", ready))

    def _queued(self, shard: str, version: int) -> bool:
        """Whether ``shard``'s events up to ``version`` are queued (or never will be: not
        followed, or done)."""
        follower = self.followers.get(shard)
        return follower is None or follower.done or (
            follower.last is not None and follower.last >= version)


def watched_shards(cluster_map: ClusterMap, request: dict[str, Any]) -> set[str]:
    """The shards a watch follows under ``cluster_map``'s ring: the key's owner, or every
    shard of the ring (not a shard still being filled by a migration: it joins at the
    flip)."""
    if not cluster_map.ring.shards:
        return set(cluster_map.shards)
    if "key" in request:
        return {shard_for_key(cluster_map.ring, request["key"])}
    return set(cluster_map.ring.shards)


async def merged_watch(router: Router, session: aiohttp.ClientSession,
                       request: dict[str, Any], starts: dict[str, int | None], *,
                       progress: bool, eventual: EventualWatch | None = None
                       ) -> AsyncGenerator[WatchEvent, None]:
    merge = _Merge(router, session, request, eventual)
    merge.start(starts)
    queue = merge.queue
    try:
        while True:
            kind, body = await queue.get()
            if kind == "error":
                raise body
            if kind == "progress":
                if progress:
                    yield WatchEvent("progress", None, None, body[1], body[0])
                continue
            for e in body:
                yield WatchEvent(e["type"], bytes(e["key"]),
                                 None if e.get("value") is None else bytes(e["value"]),
                                 int(e["version"]), str(e["shard"]),
                                 e.get("prev_version"), e.get("expires_at"))
    finally:
        await merge.close()

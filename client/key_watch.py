"""``Client.watch``: one stream of key events merged from every shard that can hold them.

Each shard is followed by its own task over a ``/v1/watch`` WebSocket to the shard's
primary. The task remembers the last version it handed on for its shard (an events frame
holds whole entries, and a progress frame says everything up to its version was sent), and
after any break (a dropped connection, ``SLOW_CONSUMER``, ``NOT_PRIMARY`` after a failover,
a node restart) it refreshes the map and resumes from exactly that version: the node sends
every write after it, so the caller sees no gap and, since anything at or below it is
dropped, no duplicate. Errors that retrying cannot fix (``COMPACTED``, ``INVALID_ARGUMENT``)
end the iteration by raising.

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
from shardkv.client.retry import DecorrelatedJitterBackoff
from shardkv.client.routing import Router
from shardkv.cluster.errors import InvalidArgument, ShardKVError, error_from_dict
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
    """Follows one shard's watch, resuming from ``last`` after every break."""

    def __init__(self, router: Router, session: aiohttp.ClientSession, shard: str,
                 request: dict[str, Any], last: int | None,
                 queue: asyncio.Queue[tuple[str, Any]],
                 eventual: EventualWatch | None = None) -> None:
        self.router = router
        self.eventual = eventual
        self.tried: list[str] = []  # members failed in a row (eventual: the next is tried)
        self.session = session
        self.shard = shard
        self.request = request
        self.last = last
        self.queue = queue
        self.resumes = 0

    async def run(self) -> None:
        """Follow until cancelled; an error retrying cannot fix goes to the queue."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # never die silently: the caller would wait forever
            await self.queue.put(("error", exc))

    async def _run(self) -> None:
        backoff = DecorrelatedJitterBackoff(0.05, 2.0)
        failures = 0
        while True:
            try:
                if await self._follow_once():
                    return
                failures = 0
            except ShardKVError as error:
                if not error.retryable:
                    await self.queue.put(("error", error))
                    return
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                pass
            failures += 1
            self.resumes += 1
            if not self.router.direct:
                with contextlib.suppress(ShardKVError, aiohttp.ClientError, OSError,
                                         TimeoutError):
                    await self.router.refresh()
            await asyncio.sleep(backoff.compute(failures) if failures > 1 else 0.0)

    async def _follow_once(self) -> bool:
        """One connection; True once the watch ended for good (never, today)."""
        if self.eventual is None:
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
                await self._take(unpack(msg.data))
        return False

    async def _take(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("events", "progress"):
            self.tried.clear()  # this member serves the watch
        if kind == "events":
            last = self.last if self.last is not None else -1
            events = [e for e in frame["events"] if e["version"] > last]
            self.last = max(last, int(frame["version"]))
            if events:
                await self.queue.put(("events", events))
        elif kind == "progress":
            version = int(frame["version"])
            if self.last is None or version > self.last:
                self.last = version
            await self.queue.put(("progress", (frame.get("shard", self.shard), version)))
        elif kind == "created":
            if self.last is None:
                self.last = int(frame["start_version"])
        elif kind == "error":
            raise error_from_dict(frame)


async def merged_watch(router: Router, session: aiohttp.ClientSession, shards: list[str],
                       request: dict[str, Any], starts: dict[str, int | None], *,
                       progress: bool, eventual: EventualWatch | None = None
                       ) -> AsyncGenerator[WatchEvent, None]:
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_FRAMES)
    followers = [_ShardFollower(router, session, s, request, starts[s], queue, eventual)
                 for s in shards]
    tasks = [asyncio.create_task(f.run(), name=f"watch-{f.shard}") for f in followers]
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
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

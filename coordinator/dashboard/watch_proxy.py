"""``/ui/api/watch?prefix=P``: the dashboard's live watch of a prefix (a WebSocket).

The browser talks to its coordinator only (same origin, one credential); the coordinator
opens the node watch (``GET /v1/watch``, JSON text frames, docs/watch.md) on every shard's
primary and forwards what they send as ``{"type": "watch", "shard", "events": [...]}``
frames, after a ``{"type": "created", "prefix", "shards"}`` sent once the node watches are
open (``shards``: those that opened within ``OPEN_WAIT_S``). A dropped node watch
(failover, restart) is reopened on the shard's primary in the
current map from the last version forwarded, so a failover shows as a short pause, not a gap.
The first frame from the browser is ``{"token": ...}`` when the cluster is secured and the
upgrade carried no ``Authorization`` header (dashboard_auth.py). At most ``MAX_PROXIES`` such
watches are open per coordinator; a browser that does not read for ``SEND_TIMEOUT_S`` is cut.

Resharding: events are judged by the ring history of the coordinator's map
(``cluster/ring_history.py``, the rules the client library's watch uses): a migration's copy
on a target and the clean-up on its source are not forwarded, and a shard that joins the
ring is followed from where it began owning its keys. A shard that leaves the ring is let go.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import aiohttp
from aiohttp import web
from shardkv.cluster.errors import InvalidArgument, ShardKVError, Unavailable
from shardkv.cluster.ring_history import RingHistory
from shardkv.cluster.wire import to_json
from shardkv.coordinator import dashboard_auth
from shardkv.coordinator.events_api import drain, open_authenticated
from shardkv.coordinator.http_io import coordinator_of

MAX_PROXIES = 32
SEND_TIMEOUT_S = 10.0
REOPEN_PAUSE_S = 0.5
OPEN_WAIT_S = 10.0
RING_POLL_S = 30.0  # how long one wait for a newer map lasts before waiting again
_open = 0


def _as_key(raw: Any) -> bytes:
    """A key of a JSON watch frame: text, or ``{"b64": ...}`` when it is not UTF-8."""
    if isinstance(raw, dict):
        return base64.b64decode(str(raw.get("b64", "")))
    return str(raw).encode()


def _users_writes(coord: Any, shard_id: str, events: list[dict[str, Any]]) -> list[dict]:
    """The events that are users' writes: not a migration's copy or clean-up."""
    history = RingHistory(coord.watch.current)
    return [e for e in events
            if history.owned(shard_id, _as_key(e.get("key")), int(e.get("version", 0)))]


async def _follow_shard(coord: Any, shard_id: str, prefix: str, out: web.WebSocketResponse,
                        opened: asyncio.Event, start: int | None = None) -> None:
    """Forward one shard's events until cancelled or the shard leaves the ring, reopening
    after a drop; ``opened`` is set once the node has subscribed the watch (every later write
    of the shard will be sent). ``start``: the version to begin after (a joining shard)."""
    last: int | None = start
    async with aiohttp.ClientSession() as session:
        while shard_id in coord.watch.current.ring.shards:
            node = coord.watch.current.primary_of(shard_id)
            try:
                if node is None:
                    raise Unavailable("no primary")
                request: dict[str, Any] = {"prefix": prefix}
                if last is not None:
                    request["start_version"] = last
                async with session.ws_connect(f"{node.url}/v1/watch", heartbeat=30.0) as ws:
                    await ws.send_str(json.dumps(request))
                    async for msg in ws:
                        frame = json.loads(msg.data)
                        if frame.get("type") == "events":
                            last = int(frame["version"])
                            events = _users_writes(coord, shard_id, frame["events"])
                            if events:
                                await asyncio.wait_for(out.send_str(to_json({
                                    "type": "watch", "shard": shard_id,
                                    "events": events}).decode()), SEND_TIMEOUT_S)
                        elif frame.get("type") == "created":
                            last = int(frame["version"]) if last is None else last
                            opened.set()
                        elif frame.get("type") == "error":
                            break
            except (aiohttp.ClientError, OSError, ValueError, KeyError, ShardKVError):
                pass
            await asyncio.sleep(REOPEN_PAUSE_S)


async def _follow_joining_shards(coord: Any, prefix: str, out: web.WebSocketResponse,
                                 followed: set[str], tasks: list[asyncio.Task[None]]) -> None:
    """Start a follower for each shard that joins the ring while the page watches, from the
    version where it began owning its keys (below it: only imported copies)."""
    version = coord.watch.current.version
    while True:
        newer = await coord.watch.wait_newer(version, RING_POLL_S)
        if newer is None:
            if coord.watch.closed:
                return
            continue
        version = newer.version
        history = RingHistory(newer)
        for shard_id in sorted(set(newer.ring.shards) - followed):
            followed.add(shard_id)
            tasks.append(asyncio.create_task(_follow_shard(
                coord, shard_id, prefix, out, asyncio.Event(), history.joined(shard_id))))


async def watch(request: web.Request) -> web.StreamResponse:
    global _open
    coord = coordinator_of(request)
    prefix = request.query.get("prefix", "")
    try:
        if len(prefix.encode()) > 1024:
            raise InvalidArgument("prefix is over 1024 bytes")
        dashboard_auth.check_origin(request)
        principal = dashboard_auth.check_header(coord, request)
        if _open >= MAX_PROXIES:
            raise Unavailable(f"this coordinator serves {MAX_PROXIES} dashboard watches")
    except ShardKVError as exc:
        return web.json_response(exc.to_dict(), status=exc.http_status)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    _open += 1
    tasks: list[asyncio.Task[None]] = []
    try:
        if not await open_authenticated(coord, request, ws, principal):
            return ws
        shards = sorted(coord.watch.current.ring.shards)
        opened = [asyncio.Event() for _ in shards]
        tasks = [asyncio.create_task(_follow_shard(coord, s, prefix, ws, event))
                 for s, event in zip(shards, opened, strict=True)]
        tasks.append(asyncio.create_task(
            _follow_joining_shards(coord, prefix, ws, set(shards), tasks)))
        # `created` once every shard's node watch is open: writes from then on are all seen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), OPEN_WAIT_S)
        await ws.send_str(to_json({"type": "created", "prefix": prefix, "shards": [
            s for s, e in zip(shards, opened, strict=True) if e.is_set()]}).decode())
        await drain(ws)
    except (ConnectionError, RuntimeError, TimeoutError):
        pass
    finally:
        _open -= 1
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        if not ws.closed:
            await ws.close()
    return ws


def routes() -> list[web.RouteDef]:
    return [web.get("/ui/api/watch", watch)]

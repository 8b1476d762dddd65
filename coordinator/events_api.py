"""``GET /v1/events`` on a coordinator: cluster events as they happen (docs/events.md).

A WebSocket of JSON text frames, one event each. The query is checked before the socket
opens (400 ``INVALID_ARGUMENT``): ``since=V`` first replays the kept events of maps newer
than version V (0: all kept; map versions are the same on every coordinator, so a feed
resumes on any of them), ``stats=1`` adds a ``node.stats`` sample per node every couple of
seconds (node_stats.py), ``types=a,b`` keeps only those event types. Then:

1. when the cluster is secured and the upgrade carried no ``Authorization`` header, the
   first frame from the subscriber must be ``{"token": "..."}`` (dashboard_auth.py), within
   ``AUTH_WAIT_S``; otherwise an ``UNAUTHORIZED`` error frame and the socket closes;
2. a ``cluster.snapshot`` (the whole map and its version);
3. the kept events after ``since``, then every new one.

A subscriber that does not keep up (its bounded queue overflows, or one frame cannot be sent
for ``SEND_TIMEOUT_S``) gets a ``SLOW_CONSUMER`` error frame and is closed; it may reconnect
with ``since=<the last map_version it saw>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import WSMsgType, web
from shardkv.cluster.errors import (
    InvalidArgument,
    ShardKVError,
    SlowConsumer,
    Unauthorized,
    Unavailable,
)
from shardkv.cluster.wire import to_json
from shardkv.coordinator import dashboard_auth
from shardkv.coordinator.cluster_events import CLUSTER_EVENT_TYPES, Event, snapshot_event
from shardkv.coordinator.event_log import Subscription
from shardkv.coordinator.http_io import coordinator_of

AUTH_WAIT_S = 10.0
SEND_TIMEOUT_S = 10.0
FEED_TYPES = frozenset(CLUSTER_EVENT_TYPES) | {"node.stats", "node.liveness"}


def parse_query(query: Any) -> tuple[int | None, bool, frozenset[str] | None]:
    since_raw = query.get("since")
    since: int | None = None
    if since_raw is not None:
        if not (since_raw.isascii() and since_raw.isdigit()) or len(since_raw) > 18:
            raise InvalidArgument(f"since must be a non-negative integer, got {since_raw!r}")
        since = int(since_raw)
    stats_raw = query.get("stats", "0")
    if stats_raw not in ("0", "1"):
        raise InvalidArgument(f"stats must be 0 or 1, got {stats_raw!r}")
    types: frozenset[str] | None = None
    if "types" in query:
        asked = frozenset(t for t in query["types"].split(",") if t)
        unknown = sorted(asked - FEED_TYPES)
        if unknown or not asked:
            raise InvalidArgument(f"unknown event types {unknown}; known: "
                                  f"{', '.join(sorted(FEED_TYPES))}")
        types = asked
    unknown_params = sorted(set(query) - {"since", "stats", "types"})
    if unknown_params:
        raise InvalidArgument(f"unknown parameter(s) {', '.join(unknown_params)}; allowed: "
                              "since, stats, types")
    return since, stats_raw == "1", types


async def _send(ws: web.WebSocketResponse, event: Event) -> None:
    await asyncio.wait_for(ws.send_str(to_json(event).decode()), SEND_TIMEOUT_S)


async def send_error(ws: web.WebSocketResponse, exc: ShardKVError) -> None:
    with contextlib.suppress(Exception):
        await _send(ws, {"type": "error", **exc.to_dict()})


async def await_token(coord: Any, ws: web.WebSocketResponse) -> str:
    """The principal named by the subscriber's first frame ``{"token": ...}``."""
    try:
        msg = await asyncio.wait_for(ws.receive(), AUTH_WAIT_S)
    except TimeoutError:
        raise Unauthorized("no credential: send {\"token\": ...} first") from None
    if msg.type != WSMsgType.TEXT or len(msg.data) > 8192:
        raise Unauthorized("the first frame must be {\"token\": ...} as text")
    try:
        body = json.loads(msg.data)
    except ValueError:
        raise Unauthorized("the first frame must be JSON {\"token\": ...}") from None
    return dashboard_auth.check_token(coord, body.get("token") if isinstance(body, dict)
                                      else None)


async def open_authenticated(coord: Any, request: web.Request, ws: web.WebSocketResponse,
                             principal: str | None) -> bool:
    """Upgrade to ``ws``; when the upgrade's header did not authenticate (``principal`` is
    None on a secured cluster), wait for the ``{"token": ...}`` frame. False: refused, and
    the subscriber was sent the error frame."""
    await ws.prepare(request)
    if principal is None:
        try:
            await await_token(coord, ws)
        except ShardKVError as exc:
            await send_error(ws, exc)
            return False
    return True


async def events(request: web.Request) -> web.StreamResponse:
    coord = coordinator_of(request)
    try:
        since, stats, types = parse_query(request.query)
        dashboard_auth.check_origin(request)
        principal = dashboard_auth.check_header(coord, request)
        if not coord.watch.loaded:
            raise Unavailable("the map is not loaded yet")
        sub = coord.events.subscribe()
        if sub is None:
            raise Unavailable("this coordinator serves the most event feeds it may")
    except ShardKVError as exc:
        return web.json_response(exc.to_dict(), status=exc.http_status)
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False, max_msg_size=64 * 1024)
    try:
        if await open_authenticated(coord, request, ws, principal):
            await _feed(coord, ws, sub, since, stats, types)
    except (ConnectionError, RuntimeError, TimeoutError):
        pass  # the subscriber went away or stopped reading
    finally:
        coord.events.unsubscribe(sub)
        coord.node_stats.remove(sub)
        if not ws.closed:
            await ws.close()
    return ws


async def _feed(coord: Any, ws: web.WebSocketResponse, sub: Subscription, since: int | None,
                stats: bool, types: frozenset[str] | None) -> None:
    snapshot = snapshot_event(coord.watch.current, coord.leader_id(), time.time())
    snapshot["coordinator"] = coord.config.id
    await _send(ws, snapshot)
    # The queue was subscribed before the history was read: a map's events may be in both.
    # Maps publish their events all at once, so skipping queued events of versions already
    # replayed drops exactly the duplicates.
    replayed = 0
    if since is not None:
        for event in coord.events.since(since):
            replayed = event["map_version"]
            if types is None or event["type"] in types:
                await _send(ws, event)
    if stats:
        coord.node_stats.add(sub)
    coord.liveness_events.wake()
    reader = asyncio.create_task(drain(ws))
    try:
        while not reader.done():
            getter = asyncio.ensure_future(sub.queue.get())
            woken = asyncio.ensure_future(sub.woken.wait())
            await asyncio.wait({getter, woken, reader}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if sub.slow:
                getter.cancel()
                await send_error(ws, SlowConsumer(
                    f"more than {coord.events.queue_limit} events waited for this feed; "
                    "reconnect with since=<last map_version>"))
                return
            if not getter.done():
                getter.cancel()
                continue
            event = getter.result()
            if event.get("map_version", replayed + 1) <= replayed:
                continue
            if types is None or event["type"] in types:
                await _send(ws, event)
    finally:
        reader.cancel()


async def drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) until the subscriber closes."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", events)

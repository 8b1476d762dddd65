"""The lean REST lane: ``GET`` and ``PUT /v1/kv/{key}`` served without aiohttp's
per-request machinery, on the node's client port, in front of aiohttp.

Why: a REST put cost the node about twice an rpc put (119 against 57 us of CPU,
docs/performance.md): the difference was aiohttp's objects for every request (the request,
its headers' multidict, a stream reader for the body, the response and its writer, a task
for the handler). The lane parses a request with llhttp (``lean_request.py``), runs the same
operation through ``RestApi.run`` (metrics included) with the arguments the REST handlers
would build (``kv_requests.py``), and writes the answer's bytes itself
(``lean_answers.py``). A connection's first request the lane does not take hands the
connection to aiohttp for good (``lean_connection.py``), so every other route, WebSockets
(``/v1/rpc``, ``/v1/watch``) and every odd request are served exactly as before.

``SHARDKV_LEAN_REST=0`` (``--lean-rest off``) leaves every connection to aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from shardkv.cluster.errors import ShardKVError
from shardkv.cluster.wire import wants_json
from shardkv.node.api import lean_answers
from shardkv.node.api.kv_requests import (
    GET_QUERY,
    OCTET_STREAM,
    PUT_QUERY,
    get_headers,
    put_answer,
    put_conditions,
    query_args,
)
from shardkv.node.api.lean_connection import LeanConnection, Slot
from shardkv.node.api.lean_request import LeanRequest
from shardkv.node.api.limits import ConnectionGate
from shardkv.node.api.rest import RestApi

logger = logging.getLogger("shardkv.node")


class LeanLane:
    """The lane of one node: its connections, and how it serves a request."""

    def __init__(self, rest: RestApi, gate: ConnectionGate,
                 aiohttp_handler: Callable[[], asyncio.Protocol], *,
                 idle_timeout_s: float) -> None:
        self.rest = rest
        self.gate = gate
        self.make_aiohttp_handler = aiohttp_handler
        self.idle_timeout_s = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self.connections: set[LeanConnection] = set()
        self.stopping = False
        self.tcp_keepalive = True  # SO_KEEPALIVE on every connection, as aiohttp sets it
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None

    @property
    def max_body(self) -> int:
        return self.rest.ctx.limits.max_value_bytes

    def protocol(self) -> LeanConnection:
        """A protocol for one new connection (the ``ConnectionGate`` wraps it)."""
        return LeanConnection(self)

    def forget(self, connection: LeanConnection) -> None:
        self.connections.discard(connection)
        self._check_idle()

    # -- serving ----------------------------------------------------------------------------

    def dispatch(self, connection: LeanConnection, slot: Slot, request: LeanRequest,
                 body: bytes) -> None:
        """Starts serving ``request``; its answer goes to ``connection.answered``. The
        arguments are checked here, so a bad one is answered without a task."""
        key: str | bytes = request.key
        if key.isascii():  # as ``as_key`` encodes it, once here rather than at each check
            key = key.encode("ascii")  # type: ignore[union-attr]
        if not request.query and request.if_match is None and request.if_none_match is None:
            args: dict[str, Any] = {"key": key, "value": body} if request.is_put else {"key": key}
        else:
            try:
                args = (query_args(request.query, PUT_QUERY if request.is_put else GET_QUERY)
                        if request.query else {})
                args["key"] = key
                if request.is_put:
                    put_conditions(args, request.if_match, request.if_none_match)
                    args["value"] = body
            except ShardKVError as failure:
                connection.answered(slot, lean_answers.error(failure, _json(request),
                                                             slot.close))
                return
        # A task, also for a get that could end at once: run inline, its answer left inside
        # this read's callback and cost more per get under load (1.28x, docs/performance.md);
        # as a task, the answers of a loop turn's reads go out together after them.
        task = self.loop.create_task(self._serve(connection, slot, request, args))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _serve(self, connection: LeanConnection, slot: Slot, request: LeanRequest,
                     args: dict[str, Any]) -> None:
        close = slot.close
        try:
            if request.is_put:
                result = await self.rest.run("put", args)
                body, content_type = put_answer(result, _json(request))
                data = lean_answers.answer(200, body, content_type,
                                           lean_answers.etag(result["version"]), close)
            else:
                result = await self.rest.run("get", args)
                headers = (lean_answers.etag(result["version"]) if result["expires_at"] is None
                           else _header_lines(get_headers(result)))
                data = lean_answers.answer(200, result["value"], OCTET_STREAM, headers, close)
        except ShardKVError as failure:
            data = lean_answers.error(failure, _json(request), close)
        except Exception as exc:  # the front door's last line, for the lane
            logger.error("unexpected error serving %s /v1/kv/...",
                         "PUT" if request.is_put else "GET", exc_info=exc)
            data = lean_answers.internal(close)
        connection.answered(slot, data)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self.stopping:
            self._check_idle()

    # -- stopping ---------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Graceful stop: no new requests; those in flight are answered (within
        ``grace_s``), then every lane connection is closed."""
        self.stopping = True
        self._idle = asyncio.Event()
        for connection in list(self.connections):
            connection.stop()
        self._check_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            logger.warning("%d lean REST connections still busy after %.1fs; closing them",
                           len(self.connections), grace_s)
        for connection in list(self.connections):
            connection.abort()

    def _check_idle(self) -> None:
        if self._idle is not None and not self.connections and not self._tasks:
            self._idle.set()


def _json(request: LeanRequest) -> bool:
    """Whether the answer is JSON, negotiated as ``http_body.answers_json`` does it."""
    if request.accept is None and request.content_type is None:
        return True  # wants_json's default, without its lower-casing of two empty strings
    return wants_json(request.accept, request.content_type, default=True)


def _header_lines(headers: dict[str, str]) -> bytes:
    return b"".join(b"%s: %s\r\n" % (name.encode(), value.encode())
                    for name, value in headers.items())

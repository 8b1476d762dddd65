"""What every HTTP request to a node passes through: one middleware, and a fast lane for
the two hottest routes.

The middleware does three things, in this order, for every routed request:

- tells the ``ConnectionGate`` that a whole request arrived on its connection (its bytes
  are no longer pending: ``node/api/limits.py``);
- admits or refuses a request to a cluster-internal route (``/admin/...``,
  ``/v1/digest``: ``node/membership/internal_guard.py``); the data API and the probes pass
  with one string comparison;
- is the last line for errors: an exception no handler turned into a coded error becomes
  ``INTERNAL`` (logged with its traceback), never a stack trace in a response, and aiohttp's
  own refusals (no such route, wrong method, body too large) get the same error body as
  ours.

Why one middleware and not three: aiohttp runs each middleware as a ``functools.partial``
call and a coroutine frame of its own per request; on a node's hottest requests (a small
REST get or put) those frames were measurable (docs/performance.md, issue 17), and the three
checks never needed to be separate.

The fast lane (``FrontDoor.handler``, installed as the aiohttp server's request handler)
takes ``GET`` and ``PUT /v1/kv/{key}`` straight to their REST handlers, without the router
(a regular expression over the path, a match-info object, the middleware chain's lookup;
with the single middleware, a REST get costs the node 0.84 to 0.87x of before). It does
for them exactly what the router and the middleware would: the key is the one the router's
``{key:.+}`` would match (``lane_key``; a unit test compares the two on the real app), the
gate is told, and errors get the same last line. Anything else (another route or method,
an ``Expect`` header, a path the router would not match) goes the routed way.

In front of all this, on the node's port, sits the lean lane (``node/api/lean_lane.py``):
it answers most ``GET``/``PUT`` of a key without aiohttp at all, and hands a connection to
aiohttp (and so to this module) at its first request it does not take. With the lane off
(``SHARDKV_LEAN_REST=0``) every request comes here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from shardkv.node.api.limits import ConnectionGate
from shardkv.node.api.rest import RestApi
from shardkv.node.membership.internal_guard import InternalGuard, is_internal

logger = logging.getLogger("shardkv.node")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What aiohttp's low-level server calls; the node's requests are ``web.Request``s (the app
# runner's request factory makes them), which the lane's handlers take.
ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_HTTP_ERROR_CODES = {404: "NOT_FOUND", 413: "TOO_LARGE"}
_KV = "/v1/kv/"
# The body of the last line's 500 (the lean lane answers its own with the same bytes).
INTERNAL_ERROR = {"error": "INTERNAL", "message": "internal error; the node logged the details",
                  "retryable": False}


def lane_key(path_safe: str) -> str | None:
    """The key ``/v1/kv/{key:.+}`` matches in ``path_safe`` (``URL.path_safe``: decoded but
    for ``%2F`` and ``%25``), decoded as the router decodes it; ``None`` if it does not
    match (then the router decides what the path is)."""
    if not path_safe.startswith(_KV) or len(path_safe) == len(_KV) or "\n" in path_safe:
        return None  # ``.`` in the route's pattern matches anything but a newline
    key = path_safe[len(_KV):]
    if "%" in key:
        key = key.replace("%2F", "/").replace("%25", "%")
    return key


def last_line(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer to an exception no handler turned into a coded error (see the module
    docstring); re-raises what is not an error (a redirect, a cancellation)."""
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_ERROR_CODES.get(exc.status, "INVALID_ARGUMENT")
        return web.json_response(
            {"error": code, "message": exc.reason, "retryable": False},
            status=exc.status, headers={k: v for k, v in exc.headers.items()
                                        if k.lower() == "allow"},
        )
    logger.error("unexpected error serving %s %s", request.method, request.path,
                 exc_info=exc)
    return web.json_response(INTERNAL_ERROR, status=500)


class FrontDoor:
    """``middleware`` is the node app's only middleware; ``handler`` wraps the server's
    request handler with the fast lane."""

    def __init__(self, gate: ConnectionGate, guard: InternalGuard,
                 rest: RestApi | None = None) -> None:
        self.gate = gate
        self.guard = guard
        self.rest = rest

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.gate.delivered(request.transport)
        try:
            if is_internal(request.path):
                refusal = await self.guard.admit(request)
                if refusal is not None:
                    return refusal
            return await handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return last_line(request, exc)

    def handler(self, routed: ServerHandler) -> ServerHandler:
        """The aiohttp server's request handler: the fast lane, else ``routed`` (the app's
        own handler: the router, then ``middleware``)."""
        rest = self.rest
        if rest is None:
            return routed
        delivered = self.gate.delivered

        async def handle(base: web.BaseRequest) -> web.StreamResponse:
            request = cast(web.Request, base)
            method = request.method
            if method == "GET":
                lane = rest.get_named
            elif method == "PUT":
                lane = rest.put_named
            else:
                return await routed(request)
            key = lane_key(request.rel_url.path_safe)
            if key is None or request.headers.get("Expect"):
                return await routed(request)  # the router's 404/405, the expect handlers
            delivered(request.transport)
            try:
                return await lane(request, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return last_line(request, exc)

        return handle

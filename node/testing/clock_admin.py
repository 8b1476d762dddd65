"""The test-only clock endpoint: skew this node's clock from outside (the chaos ``clock``
nemesis does).

Mounted, like the failpoint routes, only when the node runs with ``SHARDKV_TEST_ADMIN=1``: a
production node's clock cannot be moved by a request.

- ``GET /admin/clock``: the current skew (``ClockReading.to_dict``);
- ``PUT /admin/clock`` with a JSON body ``{"offset_ms": float, "rate": float}`` (either may
  be left out; at least one given): set the wall offset and/or the rate
  (``NodeClock.skew``). A bad body is refused with ``INVALID_ARGUMENT`` and changes nothing;
- ``DELETE /admin/clock``: back to real time (``NodeClock.reset``).

Every change is logged (a warning: a skewed clock explains odd leases and expiries later in
the log).
"""

from __future__ import annotations

import logging

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument
from shardkv.cluster.structured_log import log_fields
from shardkv.node.clock import (
    NODE_CLOCK,
    ClockReading,
    NodeClock,
    check_offset_ms,
    check_rate,
)
from shardkv.node.testing import failpoints

logger = logging.getLogger(__name__)

FIELDS = ("offset_ms", "rate")


def parse_skew(raw: bytes, content_type: str) -> dict[str, float]:
    """The body of ``PUT /admin/clock`` as keyword arguments of ``NodeClock.skew``; raises
    InvalidArgument naming what is wrong."""
    try:
        body = wire.unpack(raw) if content_type == wire.MSGPACK else wire.from_json(raw or b"")
    except ValueError as exc:
        raise InvalidArgument(f"unreadable body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument('the body must be a JSON object such as {"offset_ms": 500} or '
                              '{"rate": 1.02}')
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise InvalidArgument(f"unknown fields {unknown}; known: {list(FIELDS)}")
    if not body:
        raise InvalidArgument("give offset_ms and/or rate")
    change: dict[str, float] = {}
    try:
        if "offset_ms" in body:
            change["offset_ms"] = check_offset_ms(body["offset_ms"])
        if "rate" in body:
            change["rate"] = check_rate(body["rate"])
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    return change


class ClockAdmin:
    """The handlers, over one clock (the process's, unless a test gives another)."""

    def __init__(self, clock: NodeClock = NODE_CLOCK) -> None:
        self.clock = clock

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.clock.reading().to_dict())

    async def put(self, request: web.Request) -> web.Response:
        try:
            change = parse_skew(await request.read(), request.content_type)
        except InvalidArgument as exc:
            return web.json_response(exc.to_dict(), status=exc.http_status)
        before = self.clock.reading()
        self.clock.skew(**change)
        return self._changed("clock skewed", before, change)

    async def delete(self, request: web.Request) -> web.Response:
        before = self.clock.reading()
        self.clock.reset()
        return self._changed("clock reset to real time", before, {})

    def _changed(self, message: str, before: ClockReading,
                 change: dict[str, float]) -> web.Response:
        after = self.clock.reading()
        logger.warning(message, extra=log_fields(**change, before=before.to_dict(),
                                                 after=after.to_dict()))
        return web.json_response(after.to_dict())


def admin_routes(clock: NodeClock = NODE_CLOCK) -> list[web.RouteDef]:
    """The routes above; empty unless ``SHARDKV_TEST_ADMIN=1`` (the node mounts whatever
    this returns)."""
    if not failpoints.test_admin_enabled():
        return []
    admin = ClockAdmin(clock)
    return [
        web.get("/admin/clock", admin.get),
        web.put("/admin/clock", admin.put),
        web.delete("/admin/clock", admin.delete),
    ]

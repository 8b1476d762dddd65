"""HTTP bodies for every shardkv server: read a request's object, answer in the format the
caller negotiated, answer errors the same way.

One negotiation rule for the node's REST API, the replication endpoints and the coordinator
(``wire.wants_json``): the request's ``Accept`` decides (msgpack or JSON), then the format the
request was itself sent in, then the route's default (JSON, except ``/v1/batch``, which
answers msgpack to a request that names neither). Errors travel as the error body of
``cluster/errors.py`` with its HTTP status, negotiated like any answer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument, ShardKVError


def answers_json(request: web.Request, *, default: bool = True) -> bool:
    """Whether the answer to ``request`` is JSON (else msgpack)."""
    return wire.wants_json(request.headers.get("Accept"), request.headers.get("Content-Type"),
                           default=default)


def encode_answer(body: Any, json: bool) -> tuple[bytes, str]:
    """``body`` as JSON or msgpack, with its content type (for servers that write their
    own responses, such as the node's lean REST lane, as well as for ``respond``)."""
    if json:
        return wire.to_json(body), wire.JSON
    return wire.pack(body), wire.MSGPACK


def respond(request: web.Request, body: Any, status: int = 200,
            headers: dict[str, str] | None = None, *, default_json: bool = True) -> web.Response:
    """``body`` encoded as the caller negotiated."""
    data, content_type = encode_answer(body, answers_json(request, default=default_json))
    return web.Response(body=data, status=status, headers=headers, content_type=content_type)


def error_response(request: web.Request, error: ShardKVError) -> web.Response:
    """A coded error as its error body and HTTP status."""
    return respond(request, error.to_dict(), status=error.http_status)


async def read_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a map (msgpack by Content-Type, else JSON); ``INVALID_ARGUMENT``
    if it is anything else. The server's ``client_max_size`` bounds how much is read."""
    raw = await request.read()
    if not raw:
        if allow_empty:
            return {}
        raise InvalidArgument("the request needs a body (a JSON object)")
    is_msgpack = wire.MSGPACK in (request.headers.get("Content-Type") or "").lower()
    try:
        body = wire.unpack(raw) if is_msgpack else wire.from_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "msgpack" if is_msgpack else "JSON"
        raise InvalidArgument(f"the body is not valid {kind}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument(f"the body must be an object, not {type(body).__name__}")
    return body

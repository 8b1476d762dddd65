"""Request bodies in, responses and error values out, for the coordinator's HTTP API.

Bodies are JSON or msgpack (by Content-Type); answers are JSON unless the request's Accept
asks for msgpack. Every failure leaves as ``{"error", "message", "retryable", ...}`` with the
status of cluster/errors.py: a malformed request is refused before anything is proposed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from shardkv.cluster import wire
from shardkv.cluster.errors import (
    ErrorCode,
    InternalError,
    InvalidArgument,
    ShardKVError,
    error_from_dict,
)

MAX_BODY = 1 << 20

# The Coordinator serving a request (typed loosely here to keep this module import-light).
COORDINATOR_KEY: web.AppKey[Any] = web.AppKey("coordinator", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def coordinator_of(request: web.Request) -> Any:
    return request.app[COORDINATOR_KEY]


def respond(request: web.Request, body: Any, status: int = 200,
            headers: dict[str, str] | None = None) -> web.Response:
    if not wants_msgpack(request):
        return web.Response(body=wire.to_json(body), status=status,
                            content_type=wire.JSON, headers=headers)
    return web.Response(body=wire.pack(body), status=status, content_type=wire.MSGPACK,
                        headers=headers)


def wants_msgpack(request: web.Request) -> bool:
    return wire.MSGPACK in (request.headers.get("Accept") or "").lower()


def error_response(request: web.Request, exc: ShardKVError) -> web.Response:
    return respond(request, exc.to_dict(), status=exc.http_status)


async def read_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a dict (JSON or msgpack); INVALID_ARGUMENT if it is not one."""
    raw = await request.read()
    if not raw:
        if allow_empty:
            return {}
        raise InvalidArgument("the request needs a body (a JSON object)")
    content_type = (request.headers.get("Content-Type") or "").lower()
    try:
        body = wire.unpack(raw) if wire.MSGPACK in content_type else wire.from_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "msgpack" if wire.MSGPACK in content_type else "JSON"
        raise InvalidArgument(f"the body is not valid {kind}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument(f"the body must be an object, not {type(body).__name__}")
    return body


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Refuse unknown fields: a typo must not silently become a default."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidArgument(
            f"unknown field(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def raise_for_result(result: dict[str, Any]) -> dict[str, Any]:
    """A state-machine result: the result itself, or its error raised as the typed exception."""
    if "error" in result:
        raise error_from_dict(result)
    return result


@web.middleware
async def errors_as_values(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ShardKVError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status in (404, 405, 413):
            code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.INVALID_ARGUMENT,
                    413: ErrorCode.TOO_LARGE}[exc.status]
            body = {"error": code.value, "message": exc.reason, "retryable": False}
            return respond(request, body, status=exc.status)
        raise
    except Exception as exc:
        request.app.logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(request, InternalError(f"internal error: {type(exc).__name__}"))

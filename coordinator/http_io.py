"""The coordinator's HTTP plumbing: the app key, field checks, and errors as values.

Bodies and answers go through the shared ``cluster/http_body.py`` (one negotiation rule for
every server). Every failure leaves as ``{"error", "message", "retryable", ...}`` with the
status of cluster/errors.py: a malformed request is refused before anything is proposed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from aiohttp import web
from shardkv.cluster.errors import (
    ErrorCode,
    InternalError,
    InvalidArgument,
    ShardKVError,
    error_from_dict,
)
from shardkv.cluster.http_body import answers_json, error_response, read_object, respond

if TYPE_CHECKING:
    from shardkv.coordinator.server import Coordinator

__all__ = ["COORDINATOR_KEY", "MAX_BODY", "coordinator_of", "error_response",
           "errors_as_values", "only_fields", "raise_for_result", "read_object", "respond",
           "wants_msgpack"]

MAX_BODY = 1 << 20

# The Coordinator serving a request (imported for type checking only: server.py imports this).
COORDINATOR_KEY: web.AppKey[Coordinator] = web.AppKey("coordinator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def coordinator_of(request: web.Request) -> Coordinator:
    return request.app[COORDINATOR_KEY]


def wants_msgpack(request: web.Request) -> bool:
    return not answers_json(request)


def only_fields(body: dict[str, Any], allowed: AbstractSet[str]) -> None:
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

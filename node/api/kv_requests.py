"""What a ``GET``/``PUT``/``DELETE /v1/kv/{key}`` request means, apart from any HTTP server.

Two servers answer these routes: aiohttp's handlers (``node/api/rest.py``) and the lean lane
(``node/api/lean_connection.py``), which parses requests itself. Both turn a request into an
operation's arguments and a result into an answer through the functions here, so a request
means the same thing and gets the same answer (status, ``ETag``, error body) whichever
server read it. Nothing here touches a socket or an aiohttp object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument, ShardKVError, TooLarge
from shardkv.cluster.http_body import encode_answer

GET_QUERY = frozenset({"consistency", "max_staleness_ms", "min_version", "ring_version"})
PUT_QUERY = frozenset({"ttl", "w", "ring_version"})
DELETE_QUERY = frozenset({"w", "ring_version"})
OCTET_STREAM = "application/octet-stream"


def parse_etag(header: str, name: str) -> int:
    """``"12"`` (or a bare ``12``) -> 12. Weak tags and lists are refused: a version check
    must name exactly one version."""
    text = header.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which int() then refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidArgument(f'{name} must be one version in quotes, like "12"; got {header!r}')
    return int(text)


def _query_number(value: str, name: str, *, integer: bool) -> int | float:
    try:
        number: int | float = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"{name} must be {kind}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidArgument(f"{name} must be finite, got {value!r}")
    return number


def query_args(items: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, Any]:
    """The operation arguments a route's query parameters (decoded name/value pairs, in
    order) stand for; ``INVALID_ARGUMENT`` for a name the route does not take or one given
    twice, or a number that is not one."""
    args: dict[str, Any] = {}
    for name, value in items:
        if name not in allowed:
            raise InvalidArgument(f"unknown query parameter {name!r}; this route takes "
                                  f"{', '.join(sorted(allowed))}")
        if name in args:
            raise InvalidArgument(f"query parameter {name!r} given twice")
        if name in ("consistency", "w"):
            args[name] = value
        elif name in ("min_version", "ring_version"):
            args[name] = _query_number(value, name, integer=True)
        else:
            args[name] = _query_number(value, name, integer=False)
    return args


def put_conditions(args: dict[str, Any], if_match: str | None,
                   if_none_match: str | None) -> None:
    """Adds a PUT's ``If-Match`` (compare-and-swap) and ``If-None-Match: *`` (only if
    absent) to its arguments."""
    if if_match is not None:
        args["if_version"] = parse_etag(if_match, "If-Match")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise InvalidArgument("If-None-Match takes only * (write only if absent)")
        args["if_absent"] = True


def declared_too_large(declared: int, limit: int) -> TooLarge:
    """The refusal of a body whose Content-Length is over ``limit``."""
    return TooLarge(f"request body is {declared} bytes; the limit is {limit}")


def get_headers(result: dict[str, Any]) -> dict[str, str]:
    """The headers of a found key besides its type: the version, and when it expires."""
    headers = {"ETag": f'"{result["version"]}"'}
    if result["expires_at"] is not None:
        headers["X-Expires-At"] = repr(result["expires_at"])
    return headers


def put_answer(result: dict[str, Any], json: bool) -> tuple[bytes, str]:
    """A put's body and content type: ``{"version": n}`` as the client negotiated (JSON
    written directly: the answer has only ever that shape)."""
    if json:
        return b'{"version":%d}' % result["version"], wire.JSON
    return wire.pack(result), wire.MSGPACK


def error_answer(error: ShardKVError, json: bool) -> tuple[int, bytes, str]:
    """A coded error's status, body and content type."""
    body, content_type = encode_answer(error.to_dict(), json)
    return error.http_status, body, content_type

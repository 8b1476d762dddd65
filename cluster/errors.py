"""Error codes of the public surface, and the exceptions that carry them.

Errors are values: every failure a client can see is one of the codes below, with an HTTP
status for REST, a ``retryable`` flag that tells a client whether trying again (possibly
elsewhere, after refreshing the map) can succeed, and a human message. Nothing else ever
reaches a client: no stack traces, no library exception text without a code.

The tree mirrors redis-py's: retryable errors (the node or the route was wrong *now*) are
distinct from definite answers (the request itself was wrong, or a condition failed).
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    """The codes of DESIGN.md. The value is what travels on the wire."""

    NOT_FOUND = "NOT_FOUND"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    TOO_LARGE = "TOO_LARGE"
    NOT_PRIMARY = "NOT_PRIMARY"
    STALE_MAP = "STALE_MAP"
    TOO_STALE = "TOO_STALE"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    TIMEOUT = "TIMEOUT"
    UNKNOWN_OP = "UNKNOWN_OP"
    STALE_EPOCH = "STALE_EPOCH"
    DISK_FULL = "DISK_FULL"
    INTERNAL = "INTERNAL"
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
    COMPACTED = "COMPACTED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    UNSUPPORTED_PROTOCOL = "UNSUPPORTED_PROTOCOL"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.VERSION_MISMATCH: 412,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNKNOWN_OP: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_PRIMARY: 421,
    ErrorCode.STALE_MAP: 421,
    ErrorCode.STALE_EPOCH: 409,
    ErrorCode.TOO_STALE: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.DISK_FULL: 507,
    ErrorCode.INTERNAL: 500,
    ErrorCode.OUTCOME_UNKNOWN: 503,
    ErrorCode.COMPACTED: 410,
    ErrorCode.SLOW_CONSUMER: 503,
    ErrorCode.UNSUPPORTED_PROTOCOL: 400,
}

RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.NOT_PRIMARY,
        ErrorCode.STALE_MAP,
        ErrorCode.TOO_STALE,
        ErrorCode.UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.STALE_EPOCH,
        ErrorCode.OUTCOME_UNKNOWN,
        ErrorCode.SLOW_CONSUMER,
    }
)


class ShardKVError(Exception):
    """Base of every error with a code. ``details`` carries structured hints (the primary's
    id and URL for NOT_PRIMARY, the map version for STALE_MAP, the current version for
    VERSION_MISMATCH) so a client can act without parsing the message."""

    code: ErrorCode = ErrorCode.INTERNAL
    # None: as the code says. False: this error is final here even though its code is one a
    # client usually retries (a node whose disk failed: go elsewhere, not here again).
    retry_here: bool | None = None

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code.value)
        self.message = message or self.code.value
        self.details = details

    @property
    def retryable(self) -> bool:
        if self.retry_here is not None:
            return self.retry_here
        return self.code in RETRYABLE

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"error", "message", "retryable", **details}``."""
        body: dict[str, Any] = {
            "error": self.code.value,
            "message": self.message,
            "retryable": self.retryable,
        }
        body.update(self.details)
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"


class NotFound(ShardKVError):
    code = ErrorCode.NOT_FOUND


class VersionMismatch(ShardKVError):
    code = ErrorCode.VERSION_MISMATCH


class InvalidArgument(ShardKVError):
    code = ErrorCode.INVALID_ARGUMENT


class UnknownOp(ShardKVError):
    code = ErrorCode.UNKNOWN_OP


class TooLarge(ShardKVError):
    code = ErrorCode.TOO_LARGE


class NotPrimary(ShardKVError):
    code = ErrorCode.NOT_PRIMARY


class StaleMap(ShardKVError):
    code = ErrorCode.STALE_MAP


class StaleEpoch(ShardKVError):
    code = ErrorCode.STALE_EPOCH


class TooStale(ShardKVError):
    code = ErrorCode.TOO_STALE


class Unavailable(ShardKVError):
    code = ErrorCode.UNAVAILABLE


class StorageFailed(Unavailable):
    """This node's disk failed (its log refuses writes until it recovers): not retryable on
    this node; a client goes elsewhere or reports it."""

    retry_here = False


class Unauthorized(ShardKVError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ShardKVError):
    """Authenticated, but not as someone allowed to do this (another node's id, a full
    shard)."""

    code = ErrorCode.FORBIDDEN


class Timeout(ShardKVError):
    code = ErrorCode.TIMEOUT


class DiskFull(ShardKVError):
    """The node's disk is below its free-space floor: it refuses writes before the WAL could
    meet ENOSPC. Not retryable: only an operator (more disk, fewer snapshots kept, a compact)
    or deletes elsewhere change it. ``details`` name the directory and the bytes free."""

    code = ErrorCode.DISK_FULL


class InternalError(ShardKVError):
    code = ErrorCode.INTERNAL


class OutcomeUnknown(ShardKVError):
    """A write that may or may not have been applied: its entry was ordered (and possibly
    shipped to replicas) before the node lost the right to commit it, or the client lost the
    answer. Never a definite failure. Retrying is safe for a write that carries a client
    session (``client_id``/``seq``): the shard answers the original result if it applied it.
    The client raises it, after retrying within its deadline, to say "this may have happened"."""

    code = ErrorCode.OUTCOME_UNKNOWN


class Compacted(ShardKVError):
    """A watch asked for history the shard's log no longer holds (removed behind a snapshot).
    ``compact_version`` in the details is the oldest ``start_version`` the shard can serve."""

    code = ErrorCode.COMPACTED


class SlowConsumer(ShardKVError):
    """A watch fell further behind than its bounded buffer on the node; it was cut off. The
    client library resumes it from its last version (the node reads the rest from its log)."""

    code = ErrorCode.SLOW_CONSUMER


class UnsupportedProtocol(ShardKVError):
    """Two processes speak protocol versions more than one apart (a node and a coordinator,
    ``cluster/control_protocol.py``). Final: retrying cannot help until one side is upgraded.
    ``protocol_version`` and ``peer_protocol_version`` in the details name both versions."""

    code = ErrorCode.UNSUPPORTED_PROTOCOL


_BY_CODE: dict[ErrorCode, type[ShardKVError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        VersionMismatch,
        InvalidArgument,
        UnknownOp,
        TooLarge,
        NotPrimary,
        StaleMap,
        StaleEpoch,
        TooStale,
        Unavailable,
        Unauthorized,
        Forbidden,
        Timeout,
        DiskFull,
        InternalError,
        OutcomeUnknown,
        Compacted,
        SlowConsumer,
        UnsupportedProtocol,
    )
}


def error_from_dict(body: dict[str, Any]) -> ShardKVError:
    """Rebuild the typed exception from its wire form (unknown codes become INTERNAL)."""
    try:
        code = ErrorCode(str(body.get("error")))
    except ValueError:
        code = ErrorCode.INTERNAL
    details = {k: v for k, v in body.items() if k not in ("error", "message", "retryable")}
    error = _BY_CODE[code](str(body.get("message", code.value)), **details)
    if body.get("retryable") is False and code in RETRYABLE:
        error.retry_here = False
    return error

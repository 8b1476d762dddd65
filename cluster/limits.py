"""Request limits and argument validation shared by nodes and clients.

Checked before anything is written: a request that breaks a limit is answered with
INVALID_ARGUMENT or TOO_LARGE and leaves stored data untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkv.cluster.errors import InvalidArgument, TooLarge

MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1 << 20  # 1 MiB
HARD_MAX_VALUE_BYTES = 16 << 20  # 16 MiB: the configurable limit can never exceed this
MAX_BATCH_OPS = 1000
MAX_BATCH_BYTES = 16 << 20
MAX_FRAME_BYTES = 32 << 20  # an rpc frame or request body; larger is refused unread
# The most one answer (mget, scan page) may carry; over it, TOO_LARGE naming the cap.
DEFAULT_MAX_ANSWER_BYTES = 16 << 20
MAX_SCAN_LIMIT = 10_000
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one node enforces; ``max_value_bytes`` is configurable up to the hard cap."""

    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_batch_ops: int = MAX_BATCH_OPS
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_value_bytes <= HARD_MAX_VALUE_BYTES:
            raise ValueError(
                f"max_value_bytes must be between 1 and {HARD_MAX_VALUE_BYTES}, "
                f"got {self.max_value_bytes}"
            )


def limits_dict(limits: Limits) -> dict[str, int]:
    """What a node reports of its limits (``ping``, ``/v1/status``), so a client splits its
    multi-key calls under the node's real limits instead of a second hard-coded copy."""
    return {"max_value_bytes": limits.max_value_bytes, "max_batch_ops": limits.max_batch_ops,
            "max_batch_bytes": limits.max_batch_bytes}


def as_key(key: object) -> bytes:
    """Normalize a key (``bytes`` or UTF-8 ``str``) to bytes and check its length.

    Exact ``bytes`` (what msgpack decodes, and the common case by far) is returned as is:
    it is immutable, so a copy would only cost an allocation per key on every write."""
    if type(key) is bytes:
        raw = key
    elif isinstance(key, str):
        raw = key.encode("utf-8")
    elif isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    else:
        raise InvalidArgument(f"key must be bytes or str, not {type(key).__name__}")
    if not raw:
        raise InvalidArgument("key must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidArgument(f"key is {len(raw)} bytes; the limit is {MAX_KEY_BYTES}")
    return raw


def as_value(value: object, limits: Limits) -> bytes:
    """Normalize a value to bytes and check it against the configured maximum."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
    else:
        raise InvalidArgument(f"value must be bytes, not {type(value).__name__}")
    if len(raw) > limits.max_value_bytes:
        raise TooLarge(f"value is {len(raw)} bytes; the limit is {limits.max_value_bytes}")
    return raw


def as_ttl(ttl: object) -> float | None:
    """A TTL in seconds (None = no expiry); must be positive and finite."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidArgument(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise InvalidArgument(f"ttl must be in (0, {MAX_TTL_SECONDS}] seconds, got {ttl}")
    return float(ttl)


def as_version(version: object, name: str = "version") -> int:
    """A version (an LSN): a non-negative integer."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {version!r}")
    return version

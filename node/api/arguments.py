"""Checking an operation's arguments. Each function names the argument in its error so the
caller can fix it; every check runs before the Store is touched, so a bad request writes
nothing. Shared by the single-key operations (operations.py) and the multi-key ones
(multi_key_operations.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shardkv.cluster.errors import InvalidArgument, TooLarge, TooStale
from shardkv.cluster.limits import as_key, as_version
from shardkv.node.api.node_context import Args, NodeContext
from shardkv.node.storage.sessions import Session, parse_session

if TYPE_CHECKING:
    from shardkv.node.storage.store import Store

CONSISTENCY_LEVELS = ("strong", "eventual")
WRITE_CONCERNS = ("majority", "one")


def required(args: Args, name: str) -> Any:
    try:
        return args[name]
    except KeyError:
        raise InvalidArgument(f"missing argument {name!r}") from None


def key_arg(args: Args, name: str = "key") -> bytes:
    return as_key(required(args, name))


def opt_version(args: Args, name: str) -> int | None:
    raw = args.get(name)
    return None if raw is None else as_version(raw, name)


def opt_bool(args: Args, name: str) -> bool:
    raw = args.get(name, False)
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise InvalidArgument(f"{name} must be true or false, got {raw!r}")
    return raw


def opt_bytes(args: Args, name: str) -> bytes | None:
    raw = args.get(name)
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    raise InvalidArgument(f"{name} must be bytes, not {type(raw).__name__}")


def key_list(args: Args, name: str, limit: int) -> list[bytes]:
    raw = required(args, name)
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(f"{name} must be a list of keys, not {type(raw).__name__}")
    if len(raw) > limit:
        raise TooLarge(f"{name} has {len(raw)} keys; the limit is {limit}")
    return [as_key(k) for k in raw]


def check_read_options(ctx: NodeContext, store: Store, args: Args) -> None:
    """``consistency``, ``max_staleness_ms`` and ``min_version`` are accepted on every read;
    the primary holds every acknowledged write, so it satisfies any staleness bound, and a
    ``min_version`` beyond its last LSN means this node is behind the writer the client saw."""
    consistency = args.get("consistency")
    if consistency is not None and consistency not in CONSISTENCY_LEVELS:
        raise InvalidArgument(f"consistency must be one of {CONSISTENCY_LEVELS}, got "
                              f"{consistency!r}")
    staleness = args.get("max_staleness_ms")
    if staleness is not None and (
        isinstance(staleness, bool) or not isinstance(staleness, int | float)
        or not 0 <= staleness < math.inf
    ):
        raise InvalidArgument(f"max_staleness_ms must be a non-negative number, got "
                              f"{staleness!r}")
    min_version = opt_version(args, "min_version")
    if min_version is not None and min_version > store.last_lsn:
        raise TooStale(
            f"this node is at version {store.last_lsn}, older than min_version {min_version}",
            last_lsn=store.last_lsn,
        )
    if ctx.read_guard is not None:
        ctx.read_guard(args)


def session_of(args: Args) -> Session | None:
    """The write's client session (``client_id`` + ``seq``), or None for an unstamped write."""
    if "seq" not in args and "client_id" not in args:
        return None
    return parse_session(args.get("client_id"), args.get("seq"))


def check_write_concern(args: Args) -> None:
    w = args.get("w")
    if w is not None and w not in WRITE_CONCERNS:
        raise InvalidArgument(f"w must be one of {WRITE_CONCERNS}, got {w!r}")


def item_body(item: Any) -> dict[str, Any]:
    return {"value": item.value, "version": item.version, "expires_at": item.expires_at}

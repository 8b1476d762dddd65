"""The wire format: msgpack bodies, JSON on request, and the rpc frame shape.

msgpack is the native encoding (compact, binary-safe). JSON is accepted and returned where
the request asks for it so that curl works; bytes then travel as UTF-8 text when they are
valid UTF-8, and otherwise as ``{"b64": "..."}``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import msgpack

MSGPACK = "application/msgpack"
JSON = "application/json"


def pack(obj: Any) -> bytes:
    """Encode with msgpack (bytes stay bytes, str stays str)."""
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def packer() -> Callable[[Any], bytes]:
    """A ``pack`` of one's own: the same bytes, without building a ``Packer`` per call as
    ``packb`` does (a third of the encoding of a small rpc frame). Not thread-safe: one per
    event loop (a client connection holds one)."""
    encode: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
    return encode


def unpack(data: bytes, *, max_bytes: int | None = None, use_list: bool = True) -> Any:
    """Decode msgpack strictly: one object, no trailing garbage, bounded sizes.

    ``use_list=False`` decodes arrays as tuples: a tuple of atoms stops being tracked by the
    cyclic GC at its first collection (an online migration's import decodes a thousand
    records per request).

    Raises ``ValueError`` (or a msgpack exception, a subclass of it) on anything malformed;
    callers turn that into INVALID_ARGUMENT.
    """
    if max_bytes is None and use_list:
        # The same bounds as below: msgpack's own limits default to the input's length.
        # Passing only what differs from its defaults saves a third of a small frame's decode
        # (every rpc request at the node, every answer at the client: issue 17).
        return msgpack.unpackb(data, strict_map_key=False, max_ext_len=0)
    limit = max_bytes if max_bytes is not None else len(data)
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=use_list,
        strict_map_key=False,
        max_bin_len=limit,
        max_str_len=limit,
        max_array_len=limit,
        max_map_len=limit,
        max_ext_len=0,
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, dict):
        return {
            (k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else k): _jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def to_json(obj: Any) -> bytes:
    """Encode as JSON, turning bytes into text (or ``{"b64": ...}`` when not UTF-8)."""
    return json.dumps(_jsonable(obj), separators=(",", ":")).encode("utf-8")


MAX_JSON_DEPTH = 64


def from_json(data: bytes) -> Any:
    """Decode JSON; raises ``ValueError`` on malformed input, and on nesting deeper than
    ``MAX_JSON_DEPTH`` (no request of ours nests that deep; Python's decoder would otherwise
    raise RecursionError, or hand the handlers a structure they recurse into)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def wants_json(accept: str | None, content_type: str | None = None, *,
               default: bool = True) -> bool:
    """Whether a response should be JSON (else msgpack): the client asked for one in Accept;
    otherwise the format it sent; otherwise ``default``. The one negotiation rule of every
    server (``cluster/http_body.py``)."""
    accept = (accept or "").lower()
    if MSGPACK in accept:
        return False
    if JSON in accept:
        return True
    content_type = (content_type or "").lower()
    if MSGPACK in content_type:
        return False
    if JSON in content_type:
        return True
    return default

"""The bytes of the lean lane's answers: status line, headers and body in one ``bytes``.

Each answer carries what aiohttp's ``web.Response`` would send for the same handler result:
the status and reason phrase, ``Content-Type``, ``Content-Length``, the handler's headers
(``ETag``, ``X-Expires-At``), ``Date`` (formatted once a second, as aiohttp caches it),
aiohttp's ``Server`` string, and ``Connection: close`` when the request asked to close. The
differential tests (``tests/integration/test_lean_lane.py``) compare them with aiohttp's.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from http import HTTPStatus

from aiohttp.http import SERVER_SOFTWARE
from shardkv.cluster.errors import ShardKVError
from shardkv.node.api.front_door import INTERNAL_ERROR
from shardkv.node.api.kv_requests import error_answer

_STATUS_LINES = {status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
                 for status in HTTPStatus}
_TAIL = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"
_CLOSE = b"Connection: close\r\n"
_INTERNAL_BODY = json.dumps(INTERNAL_ERROR).encode()  # as web.json_response encodes it
_INTERNAL_TYPE = "application/json; charset=utf-8"
# Content-Type lines by type, encoded once: the types are the server's own few constants
# (JSON, msgpack, octet-stream, the 500's), never a client's.
_TYPE_LINES: dict[str, bytes] = {}


class _Date:
    """The ``Date`` header line, formatted at most once a second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def current(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.line


_DATE = _Date()


def answer(status: int, body: bytes, content_type: str, headers: bytes = b"",
           close: bool = False) -> bytes:
    """One whole response. ``headers``: extra header lines, each ending in CRLF."""
    type_line = _TYPE_LINES.get(content_type)
    if type_line is None:
        type_line = _TYPE_LINES[content_type] = b"Content-Type: %s\r\n" % content_type.encode()
    return b"".join((
        _STATUS_LINES[status],
        type_line,
        headers,
        b"Content-Length: %d\r\n" % len(body),
        _DATE.current(), _TAIL,
        _CLOSE if close else b"",
        b"\r\n",
        body,
    ))


def error(failure: ShardKVError, json_answer: bool, close: bool) -> bytes:
    """A coded error, negotiated as ``error_response`` negotiates it."""
    status, body, content_type = error_answer(failure, json_answer)
    return answer(status, body, content_type, close=close)


def internal(close: bool) -> bytes:
    """The 500 of an exception no handler coded (``front_door.last_line``'s answer)."""
    return answer(500, _INTERNAL_BODY, _INTERNAL_TYPE, close=close)


def etag(version: int) -> bytes:
    return b'ETag: "%d"\r\n' % version

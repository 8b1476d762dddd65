"""One request head of the lean lane: parsed by llhttp (httptools) and taken only if its
meaning is beyond doubt.

The lane (``node/api/lean_connection.py``) answers a request itself only if aiohttp, given
the same bytes, would have parsed it into the same request and handed it to the same
handler. So ``HeadReader.read`` returns ``None`` (the connection then goes to aiohttp,
which answers as it always has, including its own 400s) for anything outside a narrow,
common shape:

- ``GET`` or ``PUT`` (exactly; not ``HEAD``) of ``/v1/kv/{key}`` with a non-empty key, over
  ``HTTP/1.1`` with a ``Host`` header;
- a ``Content-Length`` body (none for a GET), no ``Transfer-Encoding``, ``Expect``,
  ``Upgrade``, ``Content-Encoding`` (aiohttp would inflate the body) or
  ``Sec-WebSocket-Key1`` (aiohttp refuses it);
- every header line reported by llhttp (their count is checked against the head's lines,
  so a header the lane did not see cannot change the meaning), none of aiohttp's singleton
  headers twice, no line over aiohttp's 8190 bytes, at most 100 headers, and the headers
  the lane reads in ASCII;
- nothing after a ``Connection: close`` request in the bytes received (aiohttp's parser
  refuses the whole read with a 400; ``lean_connection.py`` checks it).

llhttp here is strict (CRLF line ends, token characters), where aiohttp's is lenient: a
request that strict llhttp refuses may still be one aiohttp serves, so a parse error hands
over too, never answers 400 itself. The key and the query are decoded by the very code
aiohttp uses (``yarl``, ``lane_key``) whenever the target has a ``%``, ``?`` or ``#``.

**The strict shape, read without llhttp.** Through httptools every request costs five or more
Python callbacks (``on_url``, one ``on_header`` a header, ``on_headers_complete``,
``on_message_complete``) and the checks after them. Most heads (wrk's, the client
libraries') are of a stricter shape, which ``_read_strict`` checks with one compiled regular
expression over the whole head, in C, and reads from a split; anything else goes to llhttp
as before. It takes only a subset of what the llhttp path takes, and reads it the same
(``tests/unit/test_strict_head.py`` checks that on generated heads, valid and mutated):

- the request line exactly ``GET`` or ``PUT``, one space, a target of ``/v1/kv/`` and
  RFC 3986 path and query characters (no ``#``), one space, ``HTTP/1.1``;
- every header line ``token: value``: a colon and exactly one space, a non-empty value of
  visible ASCII with inner spaces, no tab, no trailing blank, every line ending in CRLF (no
  bare CR or LF, no NUL, no obs-fold: a line starting with a blank is no token);
- at most 100 header lines in a head within the 8190-byte line bound;
- a ``Host``; none of the refused headers nor ``Proxy-Connection``; no header the lane
  reads, no singleton and no ``Connection`` twice; a ``Connection`` only if it is
  ``close`` or ``keep-alive`` (llhttp's keep-alive answer is then certain);
- a ``Content-Length`` of ASCII digits (none for a GET but ``0``, a PUT's within the limit).

llhttp's parser then never sees the request; it is between two messages before and after
it, as if it had read it, so the next head that does need it is read the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httptools
from aiohttp.http_parser import SINGLETON_HEADERS
from shardkv.node.api.front_door import lane_key
from yarl import URL

# aiohttp's max_line_size and max_field_size (web_protocol.RequestHandler's defaults).
MAX_LINE = 8190
MAX_HEADERS = 100
# A head longer than this goes to aiohttp (whose own bounds then apply) unread by the lane.
MAX_HEAD = 32 << 10

_KV = b"/v1/kv/"
_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
# Headers the lane reads (the first one counts, as ``CIMultiDict.get`` takes the first).
_READ = frozenset({b"host", b"content-length", b"if-match", b"if-none-match", b"accept",
                   b"content-type"})
# Headers that make a request aiohttp's: a body that is not plain Content-Length, an
# interim answer, a protocol switch.
_REFUSED = frozenset({b"expect", b"transfer-encoding", b"upgrade", b"content-encoding",
                      b"sec-websocket-key1"})
_TRACKED = _READ | _SINGLETONS


@dataclass(slots=True)
class LeanRequest:
    """A request the lane takes: what the REST handlers read from aiohttp's request."""

    is_put: bool
    key: str
    query: list[tuple[str, str]]  # decoded name/value pairs, in order
    if_match: str | None
    if_none_match: str | None
    accept: str | None
    content_type: str | None
    content_length: int
    keep_alive: bool


class HeadReader:
    """Reads heads with one llhttp parser per connection (it carries over from one message
    to the next); after a ``None`` the connection is aiohttp's and the reader is done."""

    __slots__ = ("_complete", "_count", "_fields", "_headers_done", "_keep_alive", "_odd",
                 "_parser", "_strict", "_url")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: dict[bytes, bytes] = {}
        self._count = 0
        self._odd = False
        self._headers_done = False
        self._keep_alive = True
        self._complete = False
        self._strict = False  # the last head was read by _read_strict, not llhttp

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if len(name) + len(value) > MAX_LINE:
            self._odd = True
            return
        lower = name.lower()
        if lower in _REFUSED:
            self._odd = True
        elif lower in _TRACKED:
            fields = self._fields
            if lower not in fields:
                fields[lower] = value
            elif lower in _SINGLETONS:
                self._odd = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        # Asked here: once the message is complete, llhttp has reset what it knew of it.
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True

    # -- reading ----------------------------------------------------------------------------

    def read(self, head: bytes, max_body: int) -> LeanRequest | None:
        """The request whose whole head (through its blank line) is ``head``, or ``None``
        if the lane does not take it. ``max_body``: a larger PUT body is aiohttp's (its
        413). Call :meth:`body` with the body's bytes next if ``content_length`` > 0."""
        request = _read_strict(head, max_body)
        self._strict = request is not None  # then llhttp is fed neither head nor body
        return request if request is not None else self.read_llhttp(head, max_body)

    def read_llhttp(self, head: bytes, max_body: int) -> LeanRequest | None:
        """:meth:`read` by llhttp alone (any head the strict reading does not take)."""
        if not (head.startswith(b"GET /v1/kv/") or head.startswith(b"PUT /v1/kv/")):
            return None
        self._url = b""
        fields: dict[bytes, bytes] = {}
        self._fields = fields
        self._count = 0
        self._odd = self._headers_done = self._complete = False
        try:
            self._parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None
        line_end = head.find(b"\r\n")
        if (self._odd or not self._headers_done or self._count > MAX_HEADERS
                or head[line_end - 9:line_end] != b" HTTP/1.1" or b"host" not in fields
                or head.count(b"\r\n") - 2 != self._count):  # a header with an empty value
            return None
        is_put = head[0] == 0x50  # "P"
        length = int(fields[b"content-length"]) if b"content-length" in fields else 0
        if (length > max_body if is_put else length != 0) or self._complete != (length == 0):
            return None
        target = _target(self._url)
        if target is None:
            return None
        try:
            if_match, if_none_match, accept, content_type = (
                _text(fields.get(name)) for name in
                (b"if-match", b"if-none-match", b"accept", b"content-type"))
        except UnicodeDecodeError:
            return None
        key, query = target
        return LeanRequest(is_put, key, query, if_match, if_none_match, accept, content_type,
                           length, self._keep_alive)

    def body(self, data: Any) -> bool:
        """Feeds a PUT's body (exactly ``content_length`` bytes); whether llhttp agrees that
        it completes the message (``data`` is exactly ``content_length`` bytes, so it does
        when llhttp did not read the head)."""
        if self._strict:
            return True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        return self._complete


# The request line and the header lines, checked in one pass: the target (group 1) is
# ``/v1/kv/``, the key's RFC 3986 path characters (group 2) and perhaps a query (group 3);
# the header lines (group 4) are RFC 9110 tokens, ": " and a value of visible ASCII with
# inner spaces. "%" escapes are checked where they are decoded.
_PCHARS = rb"A-Za-z0-9\-._~!$&'()*+,;=:@/%"
_HEAD = re.compile(
    rb"(?:GET|PUT) (/v1/kv/([" + _PCHARS + rb"]+)(\?[" + _PCHARS + rb"?]*)?) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?\r\n)+)"
    rb"\r\n")
_LINE = re.compile(rb"([^:]+): ([^\r]+)\r\n")

# Headers that make a head the llhttp path's to read (or aiohttp's).
_DECLINED = _REFUSED | {b"proxy-connection"}
# Headers looked at here: read by the lane, aiohttp's singletons, and Connection; each
# may appear once.
_WATCHED = _TRACKED | _DECLINED | {b"connection"}
_KEEP_ALIVE = {b"keep-alive": True, b"close": False}


def _read_strict(head: bytes, max_body: int) -> LeanRequest | None:
    """The request whose whole head (through its blank line) is ``head`` if it is of the
    strict shape (the module docstring), else ``None``: then llhttp reads it."""
    if len(head) > MAX_LINE:
        return None
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    pairs = _LINE.findall(match[4])
    if len(pairs) > MAX_HEADERS:
        return None
    fields: dict[bytes, bytes] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower in _WATCHED:
            if lower in fields or lower in _DECLINED:
                return None
            fields[lower] = value
    if b"host" not in fields:
        return None
    keep_alive = True
    if b"connection" in fields:
        asked = _KEEP_ALIVE.get(fields[b"connection"].lower())
        if asked is None:
            return None
        keep_alive = asked
    is_put = head[0] == 0x50  # "P"
    length = 0
    if b"content-length" in fields:
        declared = fields[b"content-length"]
        if not declared.isdigit() or len(declared) > 18:
            return None
        length = int(declared)
        if length > max_body if is_put else length != 0:
            return None
    if match[3] is not None:  # a query: decoded as aiohttp decodes it
        target = _target(match[1])
        if target is None:
            return None
        key, query = target
    else:
        query = []
        key = match[2].decode("ascii")
        if "%" in key:
            unescaped = _unescape(key)
            if unescaped is None:
                return None
            key = unescaped
    if_match = fields.get(b"if-match")
    if_none_match = fields.get(b"if-none-match")
    accept = fields.get(b"accept")
    content_type = fields.get(b"content-type")
    return LeanRequest(
        is_put, key, query,
        None if if_match is None else if_match.decode("ascii"),
        None if if_none_match is None else if_none_match.decode("ascii"),
        None if accept is None else accept.decode("ascii"),
        None if content_type is None else content_type.decode("ascii"),
        length, keep_alive)


def _unescape(key: str) -> str | None:
    """The key a path's escaped key part stands for, as ``_target`` decodes it, if every
    escape is of an ASCII character but a newline (``None`` otherwise: ``_target`` then
    decides). yarl's ``path_safe`` keeps ``%2F`` and ``%25``, which ``lane_key`` then
    turns into ``/`` and ``%``: the whole is plain percent-decoding."""
    pieces = key.split("%")
    out = pieces[0]
    for piece in pieces[1:]:
        char = _ASCII_CHARS.get(piece[:2])
        if char is None:
            return None
        out += char + piece[2:]
    return out


_ASCII_CHARS = {form % code: chr(code) for code in range(128) if code != 0x0A
                for form in ("%02X", "%02x")}


def _text(value: bytes | None) -> str | None:
    """A header value as aiohttp gives it (trailing blanks stripped; the lane reads only
    ASCII values, for which its UTF-8 decoding is the same)."""
    return None if value is None else value.rstrip(b" \t").decode("ascii")


def _ascii_path_safe(path: bytes) -> str | None:
    """``URL.path_safe`` of a path whose escapes are all of ASCII characters, computed
    without building a URL (``None`` for any other escape: yarl decodes those). yarl
    decodes every such escape but ``%2F`` and ``%25``, which it keeps (upper-cased); a unit
    test checks this against yarl for every ASCII escape."""
    pieces = path.split(b"%")
    out = [pieces[0].decode("ascii")]
    for piece in pieces[1:]:
        char = _ASCII_ESCAPES.get(piece[:2])
        if char is None:
            return None
        out.append(char)
        out.append(piece[2:].decode("ascii"))
    return "".join(out)


def _escapes() -> dict[bytes, str]:
    table = {}
    for code in range(128):
        char = f"%{code:02X}" if code in (0x25, 0x2F) else chr(code)
        table[b"%02X" % code] = table[b"%02x" % code] = char
    return table


_ASCII_ESCAPES = _escapes()


def _target(url: bytes) -> tuple[str, list[tuple[str, str]]] | None:
    """The key and query pairs of an origin-form target, decoded as aiohttp and its router
    decode them; ``None`` if the router would not give it to the key handlers."""
    if len(url) > MAX_LINE or not url.startswith(_KV) or not url.isascii():
        return None
    if b"?" not in url and b"#" not in url:
        if b"%" not in url:
            plain = url[len(_KV):].decode("ascii")
            return (plain, []) if plain else None
        path_safe = _ascii_path_safe(url)  # wrk's keys, "bench%3A00001234", come this way
        if path_safe is not None:
            decoded = lane_key(path_safe)
            return None if decoded is None else (decoded, [])
    # As aiohttp's parser splits and builds the URL (``_http_parser.pyx``).
    text = url.decode("ascii")
    mark = text.find("?")
    if mark < 0:
        path, _, fragment = text.partition("#")
        query = ""
    else:
        path = text[:mark]
        query, _, fragment = text[mark + 1:].partition("#")
    try:
        built = URL.build(path=path, query_string=query, fragment=fragment, encoded=True)
        key = lane_key(built.path_safe)
        pairs = list(built.query.items()) if built.query_string else []
    except (ValueError, TypeError, UnicodeError):
        return None
    return None if key is None else (key, pairs)

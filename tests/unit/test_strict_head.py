"""The lean lane's strict reading of a head (``_read_strict`` in node/api/lean_request.py)
takes only heads the llhttp path takes, and reads them into the same ``LeanRequest``: on
generated heads, well-formed and mutated (a byte inserted, dropped or changed), it either
declines or agrees with a fresh ``HeadReader``'s llhttp reading. The llhttp path itself is
checked against aiohttp by tests/integration/test_lean_lane.py."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from shardkv.node.api.lean_request import (
    HeadReader,
    LeanRequest,
    _read_strict,
    _target,
    _unescape,
)

MAX_BODY = 1000

# Well-formed pieces, then odd ones; a head is drawn from the first kind only, or from both
# and mutated, so that many heads are taken and many just miss.
_NAMES = (["Host", "host", "HOST", "Content-Length", "content-length", "Connection",
           "If-Match", "If-None-Match", "Accept", "Content-Type", "User-Agent", "ETag",
           "Server", "X-Trace", "Accept-Encoding", "Keep-Alive"],
          ["Expect", "Transfer-Encoding", "Upgrade", "Content-Encoding", "Sec-WebSocket-Key1",
           "Proxy-Connection", "X Bad", "X\x00", "Ho\xe9st", ""])
_VALUES = (["127.0.0.1:7100", "x", "5", "0", "000", "1001", "close", "Close", "keep-alive",
            '"3"', "*", "application/json", "application/msgpack", "a  b",
            "text/plain; charset=utf-8", "99999999999999999999", "-1", "1e3"],
           ["5 ", " 5", "\u0665", "upgrade", "close, keep-alive", '"3"  ', "a\tb", "", " ",
            "\xe9", "a\x00b", "100-continue", "chunked", "gzip", "websocket"])
_SEPARATORS = ([": "], [":", ":  ", " : ", ":\t", "; "])
_ENDS = (["\r\n"], ["\n", "\r", "\r\n "])
_KEY_PIECES = (["a", "bench", "%3A", "%3a", "%2F", "%2f", "%25", "%0D", "/", "..", ":", "~",
                "?w=1", "?ttl=5&w=all", "?", "=", "&", "'", "*", "+", "!", "@", "$", ";",
                ",", "%7E", "-", "_", "."],
               ["%0A", "%C3%A9", "%", "%G1", "#f", " ", "\xe9", "\x00", '"', "<", "{", "\\",
                "^", "`", "|"])
_METHODS = (["GET", "PUT"], ["HEAD", "POST", "get", "DELETE"])
_PATHS = (["/v1/kv/"], ["/v1/kvx/", "/v1/kv", "/v1/kv//"])
_VERSIONS = (["HTTP/1.1"], ["HTTP/1.0", "HTTP/2.0", "http/1.1"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    odd = draw(st.booleans())

    def pick(choices: tuple[list[str], list[str]]) -> str:
        good, bad = choices
        return draw(st.sampled_from(good + bad if odd and draw(st.booleans()) else good))

    method = pick(_METHODS)
    key = "".join(pick(_KEY_PIECES) for _ in range(draw(st.integers(0, 5))))
    lines = [f"{method} {pick(_PATHS)}{key} {pick(_VERSIONS)}\r\n"]
    if not odd or draw(st.booleans()):
        lines.append("Host: 127.0.0.1:7100\r\n")
    if method == "PUT" and draw(st.booleans()):
        lines.append(f"Content-Length: {draw(st.sampled_from(['5', '0', '1001', '007']))}\r\n")
    for _ in range(draw(st.integers(0, 4))):
        line = pick(_NAMES) + pick(_SEPARATORS) + pick(_VALUES) + pick(_ENDS)
        lines.insert(draw(st.integers(1, len(lines))), line)
    head = "".join(lines).encode("utf-8") + b"\r\n"
    for _ in range(draw(st.integers(0, 2)) if odd else 0):  # mutations
        at = draw(st.integers(0, len(head)))
        byte = bytes([draw(st.sampled_from([0, 9, 10, 13, 32, 58, 65, 0xC3, 0x7F]))])
        head = draw(st.sampled_from([head[:at] + byte + head[at:],
                                     head[:at] + head[at + 1:],
                                     head[:at] + byte + head[at + 1:]]))
    end = head.find(b"\r\n\r\n")
    return head if end < 0 else head[:end + 4]


def _by_llhttp(head: bytes) -> LeanRequest | None:
    reader = HeadReader()
    request = reader.read_llhttp(head, MAX_BODY)
    if request is not None and request.content_length:
        assert reader.body(b"v" * request.content_length)
    return request


@settings(max_examples=3000, deadline=None)
@given(heads())
@example(b"PUT /v1/kv/bench%3A00001234 HTTP/1.1\r\nHost: 127.0.0.1:7100\r\n"
         b"Content-Length: 256\r\n\r\n")
@example(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
def test_the_strict_reading_takes_only_what_llhttp_reads_the_same(head: bytes) -> None:
    strict = _read_strict(head, MAX_BODY)
    if strict is not None:
        assert strict == _by_llhttp(head)


def test_the_common_heads_are_read_strictly() -> None:
    """wrk's put and get, and a client's conditional put: the strict reading takes them."""
    for head in (
        b"PUT /v1/kv/bench%3A00001234 HTTP/1.1\r\nHost: 127.0.0.1:7100\r\n"
        b"Content-Length: 256\r\n\r\n",
        b"GET /v1/kv/bench%3A00001234 HTTP/1.1\r\nHost: 127.0.0.1:7100\r\n\r\n",
        b"PUT /v1/kv/a%2Fb?w=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: Python/3.11 aiohttp/3.9\r\n"
        b"Accept: application/msgpack\r\nIf-Match: \"3\"\r\nContent-Length: 5\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        strict = _read_strict(head, 256)
        assert strict is not None and strict == _by_llhttp(head), head


def test_every_ascii_escape_unescapes_as_the_target_decodes_it() -> None:
    for code in range(128):
        for escape in (f"%{code:02X}", f"%{code:02x}"):
            expected = _target(f"/v1/kv/a{escape}b".encode())
            assert _unescape(f"a{escape}b") == (None if expected is None else expected[0])


def test_a_head_after_a_strict_one_is_read_by_llhttp_as_ever() -> None:
    """llhttp's parser, skipped for a strict request, reads the next odd one (a tab) right;
    and the strict request's body is not fed to it."""
    reader = HeadReader()
    strict = b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
    assert reader.read(strict, MAX_BODY) is not None and reader.body(b"abc")
    odd = b"PUT /v1/kv/b HTTP/1.1\r\nHost:\tx\r\nContent-Length: 2\r\n\r\n"
    request = reader.read(odd, MAX_BODY)
    assert request is not None and request.key == "b" and reader.body(b"ab")
    assert reader.read(strict, MAX_BODY) is not None and reader.body(b"abc")

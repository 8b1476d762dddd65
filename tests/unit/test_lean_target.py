"""The lean lane decodes a request target exactly as aiohttp and its router do
(node/api/lean_request.py): the key ``lane_key`` takes from aiohttp's own parse of the same
bytes, and the query pairs aiohttp's request would give the REST handlers."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp.http import HttpRequestParser
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkv.node.api.front_door import lane_key
from shardkv.node.api.lean_request import _ascii_path_safe, _target
from yarl import URL


def test_ascii_escapes_decode_as_yarl_decodes_them() -> None:
    for code in range(128):
        for escape in (f"%{code:02X}", f"%{code:02x}"):
            path = f"/v1/kv/a{escape}b"
            assert _ascii_path_safe(path.encode()) == URL.build(
                path=path, encoded=True).path_safe, escape


def _aiohttp_target(url: bytes) -> tuple[str, list[tuple[str, str]]] | None:
    """What aiohttp's C parser and the REST handlers make of ``url``."""
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(mock.Mock(), loop, 2**16)
        messages, _, _ = parser.feed_data(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        loop.close()
    message = messages[0][0]
    key = lane_key(message.url.path_safe)
    if key is None:
        return None
    query = list(message.url.query.items()) if message.url.query_string else []
    return key, query


_PIECES = st.sampled_from([
    "a", "Z", "0", "-", ".", "_", "~", ":", "@", "!", "$", "&", "'", "(", ")", "*", "+", ",",
    ";", "=", "/", "%", "%2", "%2F", "%2f", "%25", "%3A", "%3a", "%41", "%0A", "%00", "%7F",
    "%C3%A9", "%FF", "%E2%82", "?", "#", "=", "..", "%3F", "%23", "%26", "%3D", "%2B",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=8).map("".join))
def test_targets_decode_as_aiohttp_decodes_them(rest: str) -> None:
    url = ("/v1/kv/" + rest).encode()
    assert _target(url) == _aiohttp_target(url), url

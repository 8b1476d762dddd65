"""No input answers 500: hypothesis throws random REST requests (methods, paths, version
headers, content types, query strings, bodies from random bytes to deeply nested JSON) and
random rpc frames (random bytes, and well-formed frames with random ops and arguments) at a
real node process. Every answer must be a coded error or a success, never INTERNAL, and the
node must log no unexpected error.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_under_attack import NodeProcess
from shardkv.cluster import wire

pytestmark = pytest.mark.integration

OPS = ["get", "put", "delete", "exists", "incr", "mget", "mput", "mdelete", "batch", "scan",
       "expire", "ttl", "ping"]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    root = tmp_path_factory.mktemp("fuzzed")
    proc = NodeProcess(root / "data", root / "node.log")
    proc.start()
    yield proc
    assert "unexpected error" not in proc.log_text(), proc.log_text()[-4000:]
    proc.stop()


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"ops": ' + b"[" * n + b"]" * n + b"}"),
    st.fixed_dictionaries({"ops": st.lists(st.dictionaries(
        st.sampled_from(["op", "key", "value", "if_version", "if_absent", "ttl", "x"]),
        json_values, max_size=5), max_size=5)}).map(lambda v: json.dumps(v).encode()),
)
paths = st.one_of(
    st.sampled_from(["/v1/batch", "/v1/kv/a", "/v1/kv/%FF", "/v1/kv/%00", "/health",
                     "/v1/status", "/v1/digest", "/v1/replication", "/ready"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
        lambda t: "/v1/kv/" + t.replace("?", "").replace("#", "")),
)
queries = st.dictionaries(
    st.sampled_from(["ttl", "w", "consistency", "max_staleness_ms", "min_version", "x"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                          blacklist_characters="&=#"), max_size=12), max_size=3)


@FUZZ
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "POST", "PATCH"]), path=paths,
       query=queries, body=bodies,
       headers=st.dictionaries(st.sampled_from(["If-Match", "If-None-Match", "Content-Type",
                                                "Accept", "X-Anything"]),
                               header_text, max_size=3))
def test_rest_never_answers_500(node: NodeProcess, method: str, path: str,
                                query: dict[str, str], body: bytes,
                                headers: dict[str, str]) -> None:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    target = path + ("?" + qs if qs else "")
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request(method, target, body=body,
                     headers={k: v.encode("latin-1").decode("latin-1")
                              for k, v in headers.items()})
        resp = conn.getresponse()
        status = resp.status
        resp.read()
    finally:
        conn.close()
    assert status < 500 or status in (503,), (method, target, headers, body[:100], status)


frames = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.integers(-(2**63), 2**64 - 1) | st.none() | st.text(max_size=5),
              st.sampled_from(OPS) | st.text(max_size=8),
              st.dictionaries(st.sampled_from(["key", "keys", "value", "pairs", "ops", "prefix",
                                               "start", "end", "cursor", "limit", "delta",
                                               "ttl", "if_version", "if_absent", "w",
                                               "consistency", "max_staleness_ms"]),
                              json_values | st.binary(max_size=20), max_size=5)
              | json_values).map(lambda t: wire.pack(list(t))),
)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def _one_frame(url: str, frame: bytes) -> Any:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_bytes(frame)
        msg = await ws.receive(timeout=30)
        return wire.unpack(msg.data) if msg.type == aiohttp.WSMsgType.BINARY else msg.type


@FUZZ
@given(frame=frames)
def test_rpc_never_answers_internal(node: NodeProcess, loop: asyncio.AbstractEventLoop,
                                    frame: bytes) -> None:
    answer = loop.run_until_complete(_one_frame(node.rpc_url, frame))
    assert isinstance(answer, list) and len(answer) == 3, answer
    assert answer[1] != "INTERNAL", (frame[:100], answer)


@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    ("PUT", "/v1/kv/a", {"If-Match": '"²"'}, b"v"),  # str.isdigit() says yes, int() says no
    ("DELETE", "/v1/kv/a", {"If-Match": '"٣"'.encode()}, b""),
    ("PUT", "/v1/kv/a", {"If-Match": '"' + "9" * 40 + '"'}, b"v"),
    ("POST", "/v1/batch", {"Content-Type": "application/json"},
     b'{"ops": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("POST", "/v1/batch", {"Content-Type": "application/json"},
     b'{"ops": [{"op": "put", "key": "k", "value": ' + b"[" * 80 + b"]" * 80 + b"}]}"),
])
def test_the_inputs_that_used_to_answer_500_answer_400(node: NodeProcess, method: str,
                                                       path: str, headers: dict[str, Any],
                                                       body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert (resp.status, answer["error"]) == (400, "INVALID_ARGUMENT"), answer

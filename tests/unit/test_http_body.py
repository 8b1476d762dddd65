"""One content-negotiation rule for every server (cluster/http_body.py, wire.wants_json)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from shardkv.cluster import wire
from shardkv.cluster.errors import InvalidArgument, NotFound
from shardkv.cluster.http_body import answers_json, error_response, read_object, respond
from shardkv.coordinator import http_io
from shardkv.node.api import rest
from shardkv.node.replication import endpoints

MP, JS = wire.MSGPACK, wire.JSON


@pytest.mark.parametrize(
    ("accept", "content_type", "default", "json_answer"),
    [
        (MP, JS, True, False),  # Accept decides first
        (JS, MP, False, True),
        (f"{JS}, {MP}", None, True, False),  # msgpack named anywhere in Accept wins
        ("*/*", MP, True, False),  # then the format the request came in
        ("*/*", JS, False, True),
        (None, None, True, True),  # then the route's default
        (None, None, False, False),
    ],
)
def test_the_rule(accept: str | None, content_type: str | None, default: bool,
                  json_answer: bool) -> None:
    assert wire.wants_json(accept, content_type, default=default) is json_answer
    headers = {k: v for k, v in (("Accept", accept), ("Content-Type", content_type)) if v}
    request = make_mocked_request("GET", "/", headers=headers)
    assert answers_json(request, default=default) is json_answer


def test_answers_and_errors_are_encoded_as_negotiated() -> None:
    asks_msgpack = make_mocked_request("GET", "/", headers={"Accept": MP})
    answer = respond(asks_msgpack, {"a": b"\xff"})
    assert answer.content_type == MP and wire.unpack(answer.body) == {"a": b"\xff"}
    error = error_response(make_mocked_request("GET", "/"), NotFound("no such key"))
    assert error.status == 404 and error.content_type == JS
    assert wire.from_json(error.body)["error"] == "NOT_FOUND"


def test_every_server_uses_the_shared_module() -> None:
    """The node's REST API, the replication endpoints and the coordinator answer through the
    same functions, so they cannot drift apart again."""
    assert rest.respond is respond and rest.error_response is error_response
    assert endpoints.respond is respond and endpoints.error_response is error_response
    assert http_io.respond is respond and http_io.error_response is error_response


async def test_read_object_refuses_what_is_not_a_map() -> None:
    class Body:
        def __init__(self, raw: bytes) -> None:
            self.raw = raw

        async def read(self) -> bytes:
            return self.raw

    def request(raw: bytes, content_type: str) -> object:
        mocked = make_mocked_request("POST", "/", headers={"Content-Type": content_type})
        mocked.read = Body(raw).read  # type: ignore[method-assign]
        return mocked

    assert await read_object(request(wire.pack({"epoch": 3}), MP)) == {"epoch": 3}  # type: ignore[arg-type]
    assert await read_object(request(b"", JS), allow_empty=True) == {}  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="must be an object"):
        await read_object(request(b"[1]", JS))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not valid msgpack"):
        await read_object(request(b"\xc1", MP))  # type: ignore[arg-type]

"""The node's HTTP routes for people and simple clients: keys, batch, health, status, metrics.

``/v1/kv/{key}`` carries raw values (the version in ``ETag``); ``/v1/batch`` takes the
``batch`` op's arguments as msgpack or JSON. Both go through the same operation table as
``/v1/rpc``, so a REST request is checked exactly like an rpc one. Errors are
``{"error", "message", "retryable", ...}`` with DESIGN.md's status codes, JSON unless the
client asks for msgpack. A body over its limit is refused (413) from its Content-Length, or
as soon as the bytes read pass the limit, never after buffering it whole.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import HttpVersion11, web
from shardkv.cluster.errors import InvalidArgument, ShardKVError, TooLarge
from shardkv.cluster.event_loop import running_loop_name
from shardkv.cluster.http_body import answers_json, error_response, respond
from shardkv.cluster.limits import MAX_FRAME_BYTES, limits_dict
from shardkv.cluster.wire import JSON, MSGPACK, from_json, unpack
from shardkv.node.api.kv_requests import (
    DELETE_QUERY,
    GET_QUERY,
    OCTET_STREAM,
    PUT_QUERY,
    declared_too_large,
    get_headers,
    parse_etag,
    put_answer,
    put_conditions,
    query_args,
)
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.operations import OPERATIONS, client_error, execute
from shardkv.node.config import NodeConfig
from shardkv.node.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from shardkv.node.metrics import NodeMetrics

logger = logging.getLogger("shardkv.node.rest")



async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with TOO_LARGE as soon as it is known to exceed ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise declared_too_large(declared, limit)
    content = request.content
    if content.is_eof():  # the whole body came with the headers (a small value): no loop
        body = content.read_nowait()
        if len(body) > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        return body
    chunks: list[bytes] = []
    total = 0
    async for chunk in content.iter_any():
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _expect_continue(request: web.Request, limit: int) -> web.StreamResponse | None:
    """``Expect: 100-continue`` (curl sends it for bodies over 1 MiB): refuse an oversized
    body before the client sends it, instead of inviting it and then discarding it."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return error_response(request, declared_too_large(declared, limit))
    if request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(request, InvalidArgument("only Expect: 100-continue is "
                                                       "understood"))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response
    return None


def _query_args(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    if not request.query_string:  # the common case: no parsed query object built at all
        return {}
    return query_args(request.query.items(), allowed)


def _json_bytes(raw: object, name: str) -> object:
    """A JSON-borne key or value: text stays text (taken as UTF-8), ``{"b64": ...}`` is
    binary."""
    if isinstance(raw, dict):
        if set(raw) != {"b64"} or not isinstance(raw["b64"], str):
            raise InvalidArgument(f'{name} must be text or {{"b64": "..."}}')
        try:
            return base64.b64decode(raw["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{name} is not valid base64") from None
    return raw


def decode_batch_body(body: bytes, content_type: str) -> Any:
    """A ``/v1/batch`` body: msgpack, or JSON when it says so (or, unlabelled, looks so)."""
    content_type = content_type.lower()
    stripped = body.lstrip()
    is_json = JSON in content_type or (
        MSGPACK not in content_type and stripped[:1] in (b"{", b"[")
    )
    if not is_json:
        try:
            return unpack(body)
        except Exception:
            raise InvalidArgument("request body is not valid msgpack") from None
    try:
        args = from_json(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("request body is not valid JSON") from None
    if isinstance(args, dict) and isinstance(args.get("ops"), list):
        for index, spec in enumerate(args["ops"]):
            if isinstance(spec, dict):
                for field in ("key", "value"):
                    if field in spec:
                        spec[field] = _json_bytes(spec[field], f"ops[{index}].{field}")
    return args


class RestApi:
    """The HTTP routes of one node (everything but ``/v1/rpc``)."""

    def __init__(self, config: NodeConfig, ctx: NodeContext, metrics: NodeMetrics,
                 state: Callable[[], str], started_at: float) -> None:
        self.config = config
        self.ctx = ctx
        self.metrics = metrics
        self._state = state  # "starting", "ready" or "stopping"
        self._started_at = started_at

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/ready", self.ready),
            web.get("/metrics", self.metrics_text),
            web.get("/v1/status", self.status),
            web.get("/v1/kv/{key:.+}", self.get_key),
            web.put("/v1/kv/{key:.+}", self.put_key, expect_handler=self._expect_value),
            web.delete("/v1/kv/{key:.+}", self.delete_key),
            web.route("*", "/v1/kv/", self.empty_key),
            web.post("/v1/batch", self.batch, expect_handler=self._expect_batch),
        ]

    async def _expect_value(self, request: web.Request) -> web.StreamResponse | None:
        return await _expect_continue(request, self.ctx.limits.max_value_bytes)

    async def _expect_batch(self, request: web.Request) -> web.StreamResponse | None:
        return await _expect_continue(request, MAX_FRAME_BYTES)

    async def run(self, op: str, args: dict[str, Any]) -> Any:
        """Run one op with metrics; errors propagate as ShardKVError only. Also what the
        lean lane (``node/api/lean_connection.py``) runs its requests through."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await execute(self.ctx, OPERATIONS[op], args)
        except Exception as exc:
            error = client_error(exc, logger)
            outcome = error.code.value
            raise error from None
        finally:
            self.metrics.observe(op, outcome, time.perf_counter() - started)

    @staticmethod
    def _key(request: web.Request) -> str:
        return request.match_info["key"]

    async def get_key(self, request: web.Request) -> web.StreamResponse:
        return await self.get_named(request, self._key(request))

    async def get_named(self, request: web.Request, key: str) -> web.StreamResponse:
        """``GET /v1/kv/{key}`` with the key already taken from the path (the router's
        handler above, or the fast lane of ``node/api/front_door.py``)."""
        try:
            args = _query_args(request, GET_QUERY)
            args["key"] = key
            result = await self.run("get", args)
        except ShardKVError as error:
            return error_response(request, error)
        return web.Response(body=result["value"], headers=get_headers(result),
                            content_type=OCTET_STREAM)

    async def put_key(self, request: web.Request) -> web.StreamResponse:
        return await self.put_named(request, self._key(request))

    async def put_named(self, request: web.Request, key: str) -> web.StreamResponse:
        """``PUT /v1/kv/{key}``, the key taken from the path (as ``get_named``)."""
        try:
            args = _query_args(request, PUT_QUERY)
            args["key"] = key
            headers = request.headers
            put_conditions(args, headers.get("If-Match"), headers.get("If-None-Match"))
            args["value"] = await read_body(request, self.ctx.limits.max_value_bytes)
            result = await self.run("put", args)
        except ShardKVError as error:
            return error_response(request, error)
        body, content_type = put_answer(result, answers_json(request))
        return web.Response(body=body, headers={"ETag": f'"{result["version"]}"'},
                            content_type=content_type)

    async def delete_key(self, request: web.Request) -> web.StreamResponse:
        try:
            args = _query_args(request, DELETE_QUERY)
            args["key"] = self._key(request)
            if_match = request.headers.get("If-Match")
            if if_match is not None:
                args["if_version"] = parse_etag(if_match, "If-Match")
            result = await self.run("delete", args)
        except ShardKVError as error:
            return error_response(request, error)
        return respond(request, result)

    async def empty_key(self, request: web.Request) -> web.StreamResponse:
        return error_response(request, InvalidArgument("key must not be empty"))

    async def batch(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, MAX_FRAME_BYTES)
            args = decode_batch_body(body, request.headers.get("Content-Type", ""))
            if not isinstance(args, dict):
                raise InvalidArgument('the body must be a map: {"ops": [...]}')
            result = await self.run("batch", args)
        except ShardKVError as error:
            return error_response(request, error)
        return respond(request, result, default_json=False)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        store = self.ctx.store
        state = self._state()
        failure = store.write_failure if store is not None else None
        if state != "ready" or store is None or failure is not None:
            return web.json_response({"status": "failed" if failure else state,
                                      "role": self.ctx.role, "write_failure": failure},
                                     status=503)
        catch_up = self.ctx.catch_up() if self.ctx.catch_up is not None else None
        if catch_up is not None and not catch_up["caught_up"]:
            return web.json_response({"status": catch_up["summary"], "role": self.ctx.role,
                                      "lsn": store.last_lsn, "catch_up": catch_up},
                                     status=503)
        return web.json_response({"status": "ready", "role": self.ctx.role,
                                  "lsn": store.last_lsn, "epoch": store.epoch})

    async def status(self, request: web.Request) -> web.Response:
        store = self.ctx.store
        config = self.config
        return web.json_response({
            "node_id": config.node_id,
            "state": self._state(),
            "role": self.ctx.role,
            "shard": config.shard,
            "epoch": None if store is None else store.epoch,
            "last_lsn": None if store is None else store.last_lsn,
            "keys": None if store is None else store.key_count,
            "write_failure": None if store is None else store.write_failure,
            "engine": config.engine,
            "fsync": config.fsync,
            "event_loop": running_loop_name(),
            "lean_rest": config.lean_rest,
            "data_dir": str(config.data_dir),
            "listen": config.listen,
            "coordinators": list(config.coordinators),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "limits": limits_dict(self.ctx.limits),
            "catch_up": self.ctx.catch_up() if self.ctx.catch_up is not None else None,
        })

    async def metrics_text(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

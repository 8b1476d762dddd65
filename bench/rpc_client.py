"""A minimal pipelined client of the node's ``/v1/rpc`` WebSocket (docs/protocol.md).

One WebSocket per client; every request in flight shares it, each tagged with its own id,
answers matched by id in any order. This is the node's fast path as the client library uses
it, without the library's routing and retries: the benchmark measures the node, not the map.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import aiohttp
import msgpack

from bench.kv_protocol import RequestFailed


class RpcClient:
    """Requests pipelined over one WebSocket. Not thread-safe; one event loop."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._packer = msgpack.Packer(use_bin_type=True)
        self._reader = asyncio.get_running_loop().create_task(self._read_answers())

    @classmethod
    async def open(cls, base_url: str) -> RpcClient:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            ws = await session.ws_connect(
                base_url.rstrip("/") + "/v1/rpc", max_msg_size=64 << 20, autoping=True
            )
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Send ``[id, op, args]`` and wait for its ``[id, status, result]``."""
        if self._ws.closed:
            raise RequestFailed("UNAVAILABLE", "rpc connection closed")
        request_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            await self._ws.send_bytes(self._packer.pack([request_id, op, args]))
            return await answer
        finally:
            self._pending.pop(request_id, None)

    async def _read_answers(self) -> None:
        failure: BaseException = RequestFailed("UNAVAILABLE", "rpc connection closed")
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                request_id, status, result = msgpack.unpackb(message.data, raw=False)
                answer = self._pending.pop(request_id, None)
                if answer is None or answer.done():
                    continue
                if status == "ok":
                    answer.set_result(result)
                else:
                    message_text = result.get("message", "") if isinstance(result, dict) else ""
                    answer.set_exception(RequestFailed(str(status), message_text))
        except Exception as exc:  # the connection broke: fail everything in flight
            failure = RequestFailed("UNAVAILABLE", f"rpc connection failed: {exc!r}")
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(failure)
        self._pending.clear()

    async def get(self, key: bytes) -> None:
        await self.call("get", {"key": key})

    async def put(self, key: bytes, value: bytes) -> None:
        await self.call("put", {"key": key, "value": value})

    async def put_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        ops = [{"op": "put", "key": key, "value": value} for key, value in items]
        await self.call("batch", {"ops": ops})

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("ping", {})
        return result

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()

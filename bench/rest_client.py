"""The node's REST surface as the generator drives it (DESIGN.md's table): raw value bodies
on ``/v1/kv/{key}``, msgpack on ``POST /v1/batch``. One keep-alive connection per request in
flight, as any HTTP/1.1 client would use it."""

from __future__ import annotations

import json
from urllib.parse import quote

import aiohttp
import msgpack

from bench.kv_protocol import RequestFailed

_MSGPACK = "application/msgpack"


class RestClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self._base = base_url.rstrip("/")
        self._session = session

    def _key_url(self, key: bytes) -> str:
        return f"{self._base}/v1/kv/{quote(key.decode('utf-8'), safe='')}"

    async def get(self, key: bytes) -> None:
        async with self._session.get(self._key_url(key)) as response:
            await _read_ok(response)

    async def put(self, key: bytes, value: bytes) -> None:
        async with self._session.put(self._key_url(key), data=value) as response:
            await _read_ok(response)

    async def put_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        body = msgpack.packb(
            {"ops": [{"op": "put", "key": key, "value": value} for key, value in items]},
            use_bin_type=True,
        )
        headers = {"Content-Type": _MSGPACK, "Accept": _MSGPACK}
        async with self._session.post(
            self._base + "/v1/batch", data=body, headers=headers
        ) as response:
            await _read_ok(response)

    async def close(self) -> None:
        await self._session.close()


async def _read_ok(response: aiohttp.ClientResponse) -> bytes:
    body = await response.read()
    if response.status != 200:
        code = f"HTTP_{response.status}"
        content_type = response.headers.get("Content-Type", "")
        try:
            if _MSGPACK in content_type:
                decoded = msgpack.unpackb(body, raw=False)
            elif "json" in content_type:
                decoded = json.loads(body)
            else:
                decoded = None
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and "error" in decoded:
            code = str(decoded["error"])
        raise RequestFailed(code, body[:200].decode("utf-8", "replace"))
    return body

"""A minimal ``/v1/rpc`` caller for the dashboard's key browser.

The coordinator is not on the data path and does not import the client library (the parts
are independent, .importlinter), so the key browser speaks the node's rpc protocol directly:
one WebSocket per call, msgpack frames ``[id, op, args]`` -> ``[id, status, result]``
(docs/protocol.md). It carries the ring version the coordinator knows, so a node that
has moved on answers ``STALE_MAP`` instead of serving a key it no longer owns.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from shardkv.cluster import wire
from shardkv.cluster.errors import ShardKVError, Unavailable, error_from_dict

CALL_TIMEOUT_S = 5.0


async def call(session: aiohttp.ClientSession, url: str, op: str,
               args: dict[str, Any]) -> Any:
    """``op`` on the node at ``url``: its result, or its error raised as a ShardKVError."""
    try:
        async with session.ws_connect(f"{url}/v1/rpc", timeout=aiohttp.ClientWSTimeout(
                ws_close=CALL_TIMEOUT_S), receive_timeout=CALL_TIMEOUT_S,
                max_msg_size=64 << 20) as ws:
            await ws.send_bytes(wire.pack([1, op, args]))
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise Unavailable(f"{url}: the rpc connection closed")
            _, status, result = wire.unpack(msg.data)
    except ShardKVError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from None
    if status != "ok":
        body = result if isinstance(result, dict) else {"message": str(result)}
        raise error_from_dict({"error": status, **body})
    return result

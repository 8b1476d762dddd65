"""The one interface the load generator drives, whatever the system under test.

A workload only ever gets a key, puts a key, or puts a batch of keys; each system's client
(``rpc_client``, ``rest_client``, ``etcd_reference``) maps those three onto its own protocol.
A ``Target`` names the system and how to reach it, and is small and picklable so that every
generator process can open its own connections from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp


class KVClient(Protocol):
    """What the generator needs of a system. Each call raises on any failure (an error code,
    a transport error): the generator counts it as an error, never as a success."""

    async def get(self, key: bytes) -> None: ...

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def put_batch(self, items: list[tuple[bytes, bytes]]) -> None: ...

    async def close(self) -> None: ...


class RequestFailed(Exception):
    """A request answered with an error (or an unexpected status): ``code`` says which."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


# The kinds of target: shardkv's rpc fast path, shardkv's REST, etcd's HTTP/JSON gateway.
KINDS = ("rpc", "rest", "etcd")


@dataclass(frozen=True, slots=True)
class Target:
    """A system under test: ``kind`` is one of ``KINDS``, ``url`` its base URL
    (``http://127.0.0.1:PORT``). ``system`` and ``variant`` only label the results
    (``shardkv``/``fsync=always``, ``etcd``/``3.4``)."""

    kind: str
    url: str
    system: str
    variant: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}: one of {', '.join(KINDS)}")

    async def connect(self, concurrency: int) -> KVClient:
        """Open a client able to keep ``concurrency`` requests in flight at once."""
        # Imported here: each client module imports this one for the interface.
        if self.kind == "rpc":
            from bench.rpc_client import RpcClient

            return await RpcClient.open(self.url)
        if self.kind == "rest":
            from bench.rest_client import RestClient

            return RestClient(self.url, _session(concurrency))
        from bench.etcd_reference import EtcdGatewayClient

        return EtcdGatewayClient(self.url, _session(concurrency))


def _session(concurrency: int) -> aiohttp.ClientSession:
    """One keep-alive HTTP/1.1 connection per request in flight: HTTP/1.1 has no pipelining
    in aiohttp, so a client at concurrency N holds N connections."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

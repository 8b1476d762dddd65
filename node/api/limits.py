"""Bounds on what strangers can make a node hold: connections, unfinished frames, slow
headers, idle sockets.

``ConnectionGate`` sits between the listening socket and aiohttp (``LimitedSite`` hands the
event loop a factory of ``_GatedProtocol``, each wrapping one aiohttp request handler):

- at most ``max_connections`` open connections, and ``max_connections_per_address`` from one
  client address; one more is answered ``503`` and closed at once;
- a connection must finish its first request's headers within ``header_timeout_s``
  (slowloris); aiohttp's keep-alive timeout (``idle_timeout_s``) closes idle ones after that;
- bytes received but not yet delivered as a message (a request, an rpc frame) count against
  ``max_pending_frame_bytes`` for the whole node: a connection whose unfinished frame would
  push the total over it is closed. Together with aiohttp's per-message cap this bounds the
  memory held in half-sent frames. Authenticated replication streams are exempt.

Every refusal is counted in ``shardkv_connections_refused_total{reason}``. ``/health`` is
served by the same loop, so it stays fast because nothing here or behind it can grow
without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

logger = logging.getLogger("shardkv.node.limits")

# A message smaller than this is never what exhausts the budget: not worth a refusal.
_SMALL_PENDING = 64 << 10


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 4096
    max_connections_per_address: int = 256
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    max_pending_frame_bytes: int = 128 << 20


class ConnectionGate:
    """Counts connections and pending bytes; see the module docstring."""

    def __init__(self, limits: ConnectionLimits, registry: CollectorRegistry | None = None
                 ) -> None:
        self.limits = limits
        self.total = 0
        self.by_address: collections.Counter[str] = collections.Counter()
        self.pending_bytes = 0
        self._by_transport: dict[Any, _GatedProtocol] = {}
        self.refused_counts: collections.Counter[str] = collections.Counter()
        self._refused = Counter("shardkv_connections_refused", "connections refused or "
                                "closed by a resource bound", ["reason"], registry=registry)
        open_gauge = Gauge("shardkv_connections_open", "open client connections",
                           registry=registry)
        open_gauge.set_function(lambda: self.total)
        pending = Gauge("shardkv_pending_frame_bytes", "bytes received in unfinished "
                        "requests and frames", registry=registry)
        pending.set_function(lambda: self.pending_bytes)

    def refuse(self, reason: str) -> None:
        self.refused_counts[reason] += 1
        self._refused.labels(reason).inc()

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        return lambda: _GatedProtocol(self, inner)

    # -- what the app tells the gate --------------------------------------------------------

    def delivered(self, transport: Any) -> None:
        """A whole message came through on ``transport``: its bytes are no longer pending."""
        guarded = self._by_transport.get(transport)
        if guarded is not None:
            guarded.request_seen = True
            guarded.clear_pending()

    def exempt(self, transport: Any) -> None:
        """An authenticated cluster stream: its frames are not a stranger's to bound."""
        guarded = self._by_transport.get(transport)
        if guarded is not None:
            guarded.clear_pending()
            guarded.exempt = True


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


class _GatedProtocol(asyncio.Protocol):
    """One connection: admitted or refused, timed, and its pending bytes counted; every
    event is passed on to aiohttp's handler."""

    def __init__(self, gate: ConnectionGate, inner: Callable[[], asyncio.Protocol]) -> None:
        self.gate = gate
        self._make_inner = inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.pending = 0
        self.request_seen = False
        self._head_tail = b""
        self.exempt = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate, limits = self.gate, self.gate.limits
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason = None
        if gate.total >= limits.max_connections:
            reason = "max_connections"
        elif gate.by_address[self.address] >= limits.max_connections_per_address:
            reason = "max_connections_per_address"
        if reason is not None:
            gate.refuse(reason)
            body = (b'{"error": "UNAVAILABLE", "message": "too many connections (%s)", '
                    b'"retryable": true}' % reason.encode())
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_BUSY % (len(body), body))
            transport.close()
            return
        gate.total += 1
        gate.by_address[self.address] += 1
        self.transport = transport  # type: ignore[assignment]
        gate._by_transport[transport] = self
        self.inner = self._make_inner()
        self.inner.connection_made(transport)
        self._timer = asyncio.get_running_loop().call_later(limits.header_timeout_s,
                                                             self._header_deadline)

    def _header_deadline(self) -> None:
        if not self.request_seen and self.transport is not None:
            self.gate.refuse("header_timeout")
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.request_seen:
            # The end of the first request's headers, seen here rather than when a handler
            # runs: a node resumed after a pause must not cut requests already received.
            tail = self._head_tail + data[:4096]
            self.request_seen = b"\r\n\r\n" in tail
            self._head_tail = tail[-3:]
        if not self.exempt:
            self.pending += len(data)
            self.gate.pending_bytes += len(data)
            if (self.gate.pending_bytes > self.gate.limits.max_pending_frame_bytes
                    and self.pending > _SMALL_PENDING):
                self.gate.refuse("pending_frame_bytes")
                assert self.transport is not None
                self.transport.abort()
                return
        self.inner.data_received(data)

    def clear_pending(self) -> None:
        self.gate.pending_bytes -= self.pending
        self.pending = 0

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.clear_pending()
        gate = self.gate
        gate.total -= 1
        gate.by_address[self.address] -= 1
        if gate.by_address[self.address] <= 0:
            del gate.by_address[self.address]
        gate._by_transport.pop(self.transport, None)
        self.inner.connection_lost(exc)


class LimitedSite(web.TCPSite):
    """A TCP site whose connections go through a ``ConnectionGate``, each served by
    ``protocol()`` (by default the runner's aiohttp server; the node's lean REST lane,
    ``node/api/lean_lane.py``, when it is on)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, gate: ConnectionGate,
                 protocol: Callable[[], asyncio.Protocol] | None = None) -> None:
        super().__init__(runner, host, port)
        self.gate = gate
        self.protocol = protocol

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.gate.protocol_factory(self.protocol or server), self._host, self._port,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            backlog=self._backlog)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

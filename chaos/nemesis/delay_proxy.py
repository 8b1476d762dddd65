"""A userspace TCP proxy that delays, drops, blackholes or cuts one link.

This machine's kernel has no ``netem``, so latency is injected in userspace: a node is told
to reach a peer through a proxy, and the proxy's :class:`LinkFaults` decide what happens to
the bytes. Per direction, chunks are queued with a delivery time (now + delay + jitter, never
earlier than the chunk before, so TCP order holds) and written when due, so a delay adds
latency without limiting throughput.

- ``delay_ms``/``jitter_ms``: added one-way latency (each direction).
- ``drop_rate``: probability, per chunk, that the connection is reset (a TCP stream cannot
  lose bytes and stay a TCP stream; what a client sees of heavy loss is a reset or a timeout).
- ``blackhole``: bytes are read and discarded; connections hang (a partition as the peers
  see it: no answer, no error, until their own timeouts).
- ``cut``: every open connection is reset and new ones are reset on accept (a peer that
  refuses, like a crashed process or an iptables REJECT).

The proxy also serves as the partition fallback where network namespaces are unavailable:
:class:`ProxyPartitioner` applies a grudge by blackholing the links it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shardkv.chaos.nemesis.partitions import Grudge, blocked_pairs

CHUNK = 64 * 1024


@dataclass(frozen=True)
class LinkFaults:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_rate: float = 0.0
    blackhole: bool = False
    cut: bool = False

    def validate(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError("drop_rate must be within [0, 1]")


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_forwarded: int = 0
    bytes_discarded: int = 0
    resets: int = 0
    open_connections: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN: the peer sees ECONNRESET."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class DelayProxy:
    """One link: listens on ``listen_host:listen_port`` (0 = any free port) and forwards to
    ``upstream``. Faults apply to new and existing connections at once."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "",
        seed: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.name = name or f"proxy->{upstream_host}:{upstream_port}"
        self.faults = LinkFaults()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("proxy not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._on_client, *self.listen)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._conns):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DelayProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def set_faults(self, faults: LinkFaults | None = None, **changes: Any) -> LinkFaults:
        """Replace the faults (or change some fields); cutting resets open connections."""
        new = replace(faults or self.faults, **changes)
        new.validate()
        self.faults = new
        if new.cut:
            for client, upstream in list(self._conns):
                self.stats.resets += 1
                _reset(client)
                if upstream is not None:
                    _reset(upstream)
        return new

    def heal(self) -> None:
        self.faults = LinkFaults()

    async def _on_client(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        try:
            if self.faults.cut:
                self.stats.resets += 1
                _reset(client_w)
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.stats.resets += 1
                _reset(client_w)
                return
            pair = (client_w, up_w)
            self._conns.add(pair)
            self.stats.open_connections += 1
            pumps = [asyncio.create_task(self._pump(client_r, up_w, client_w)),
                     asyncio.create_task(self._pump(up_r, client_w, up_w))]
            try:
                # One side gone (EOF, reset, a crashed upstream) ends the whole connection:
                # a client must see its connection drop, as it would if the peer had died,
                # rather than a half-open socket that swallows its requests.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._conns.discard(pair)
                self.stats.open_connections -= 1
                for w in pair:
                    w.transport.abort()
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is closing; the connection is aborted above
        finally:
            self._tasks.discard(task)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_w: asyncio.StreamWriter
    ) -> None:
        """Read from one side, deliver to the other when due. Ends both on EOF or error."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.faults.blackhole:
                    self.stats.bytes_discarded += len(data)
                    continue
                dst.write(data)
                await dst.drain()
                self.stats.bytes_forwarded += len(data)
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()

        writer = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while data := await src.read(CHUNK):
                if writer.done():
                    break  # the other side failed: this direction is over too
                faults = self.faults
                if faults.drop_rate and self._rng.random() < faults.drop_rate:
                    self.stats.resets += 1
                    _reset(src_w)
                    _reset(dst)
                    break
                delay = faults.delay_ms + (
                    self._rng.uniform(0, faults.jitter_ms) if faults.jitter_ms else 0.0
                )
                last_due = max(last_due, time.monotonic() + delay / 1000.0)
                queue.put_nowait((last_due, data))
            queue.put_nowait(None)
            await writer
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await writer


class ProxyPartitioner:
    """The partition fallback: every directed link (from, to) is a :class:`DelayProxy`
    through which ``from`` reaches ``to``; a grudge blackholes the links it names.

    Also the ``packet`` nemesis for delay: ``start(targets, delay_ms=...)`` slows every link
    into or out of the targets.
    """

    def __init__(self, links: Mapping[tuple[str, str], DelayProxy], name: str = "partition"):
        self.name = name
        self.links = dict(links)
        self._touched: set[tuple[str, str]] = set()

    def apply_grudge(self, grudge: Grudge) -> list[tuple[str, str]]:
        cut: list[tuple[str, str]] = []
        for receiver, sender in sorted(blocked_pairs(grudge)):
            for link in ((sender, receiver), (receiver, sender)):
                proxy = self.links.get(link)
                if proxy is not None and link not in cut:
                    proxy.set_faults(blackhole=True)
                    self._touched.add(link)
                    cut.append(link)
        return cut

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        grudge: Grudge | None = params.get("grudge")
        if grudge is not None:
            return {"blackholed": [list(link) for link in self.apply_grudge(grudge)]}
        faults = LinkFaults(**{k: v for k, v in params.items() if k in LinkFaults.__annotations__})
        faults.validate()
        changed = []
        for link, proxy in sorted(self.links.items()):
            if link[0] in targets or link[1] in targets:
                proxy.set_faults(faults)
                self._touched.add(link)
                changed.append(list(link))
        return {"links": changed, "faults": faults.__dict__}

    async def stop(self) -> dict[str, Any]:
        healed = sorted(self._touched)
        for link in healed:
            self.links[link].heal()
        self._touched.clear()
        return {"healed": [list(link) for link in healed]}

    async def heal_all(self) -> None:
        for proxy in self.links.values():
            proxy.heal()
        self._touched.clear()

"""Raw HTTP/1.1 on a socket, for tests that must control every byte a node receives (the
lean REST lane's differential tests): send bytes in chosen pieces, read every answer the
node writes until it closes, and compare answers without the headers that always differ."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

import httptools

# Headers that differ between two servers answering the same request (the clock): left
# out, or (an expiry instant) compared by presence only.
VOLATILE = frozenset({"date"})
CLOCKED = frozenset({"x-expires-at"})


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers (names lowercased, sorted, without ``VOLATILE``, ``CLOCKED``
        values masked) and body."""
        headers = sorted((name.lower(), "<clock>" if name.lower() in CLOCKED else value)
                         for name, value in self.headers if name.lower() not in VOLATILE)
        body = self.body
        if self.status == 400 and self.header("Content-Type") == "text/plain; charset=utf-8":
            # aiohttp's parser errors quote the bytes of the read that failed, which depend
            # on how the bytes were cut into reads: compared by the error's name only.
            body = body.split(b":\n", 1)[0]
            headers = [(name, value) for name, value in headers if name != "content-length"]
        return self.status, headers, body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Conversation:
    """What came back on one connection: the answers, what followed an upgrade (101), and
    whether the node closed the connection."""

    answers: list[Answer]
    upgraded_tail: bytes
    closed: bool
    # The node's close came as a reset (it closed with bytes of ours unread, e.g. the
    # sentinel behind a request it refused): answers it had sent may be lost with it.
    reset: bool = False

    def comparable(self) -> tuple[list[tuple[int, list[tuple[str, str]], bytes]], bool, bool]:
        return [a.comparable() for a in self.answers], bool(self.upgraded_tail), self.closed


class _Responses:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.current = Answer()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Answer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.answers.append(self.current)


# Ends a conversation: answered, then the node closes (unless something before it already
# made the node close). A client's EOF would not do: aiohttp closes at once on one, answers
# owed or not, which makes what comes back a race.
SENTINEL = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def converse(port: int, pieces: list[bytes], *, answers: int | None = None,
                   sentinel: bool = True, within_s: float = 10.0,
                   then_close: bool = False) -> Conversation:
    """Sends ``pieces`` one write each (``TCP_NODELAY``, and each awaited, so a piece
    boundary is usually a segment boundary), then (``sentinel``) ``SENTINEL``, and reads
    until the node closes, or until ``answers`` answers came; an upgrade (101) ends the
    reading with the bytes after it. ``then_close``: close without reading at all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    responses = _Responses()
    tail = b""
    closed = reset = False
    try:
        with contextlib.suppress(ConnectionError):  # closed by the node: read what it said
            for piece in [*pieces, SENTINEL] if sentinel and not then_close else pieces:
                writer.write(piece)
                await writer.drain()
                if len(pieces) > 1:
                    await asyncio.sleep(0)  # let the piece leave on its own
        if then_close:
            return Conversation([], b"", False)
        async with asyncio.timeout(within_s):
            while answers is None or len(responses.answers) < answers:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    data, reset = b"", True
                if not data:
                    closed = True
                    break
                try:
                    responses.parser.feed_data(data)
                except httptools.HttpParserUpgrade as upgrade:
                    tail = data[upgrade.args[0]:]
                    if responses.current not in responses.answers:
                        responses.answers.append(responses.current)
                    break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return Conversation(responses.answers, tail, closed, reset)


def request(method: str, target: str, *, body: bytes | None = None,
            headers: list[tuple[str, str]] | None = None, host: bool = True,
            version: str = "HTTP/1.1") -> bytes:
    """A well-formed request (a Content-Length when there is a body)."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return head + (body or b"")

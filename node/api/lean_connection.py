"""One client connection of the lean lane, until it becomes aiohttp's.

A connection starts here. Each whole request the lane takes (``lean_request.HeadReader``)
is dispatched to ``LeanLane`` and answered with bytes written straight to the transport.
Requests on one connection are served one after the other, as aiohttp serves them: a
pipelined get after a put sees the put (a client relies on that order), and answers leave
in request order. Answers ready within one read (a bad argument is answered at once) leave in
one write. The first request the lane does not take hands the connection over for good: the
answer still owed is written, then a new aiohttp ``RequestHandler`` (from the app runner's
``web.Server``) is given the transport and every byte from the start of that request, and
from then on this object only passes the transport's events on to it.

Bounds, as aiohttp keeps them: while a request is served, at most ``READ_AHEAD`` bytes more
are read, and nothing while the client is not reading its answers (the socket is paused, so
TCP slows the client); a head over ``MAX_HEAD`` bytes and a PUT body over the node's value
limit are aiohttp's to refuse; a connection idle for ``idle_timeout_s`` is closed; the
``ConnectionGate`` around this protocol counts the pending bytes and the header timeout as
it does for aiohttp. A request's answer is written only when its operation has returned:
for a put, once it is durable, exactly as through aiohttp.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp.tcp_helpers import tcp_keepalive
from shardkv.node.api.lean_request import MAX_HEAD, HeadReader, LeanRequest

if TYPE_CHECKING:
    from shardkv.node.api.lean_lane import LeanLane

# Bytes read beyond the request being served (the next pipelined ones) before reading stops.
READ_AHEAD = 64 << 10


class Slot:
    """The answer a connection owes for one request."""

    __slots__ = ("close",)

    def __init__(self, close: bool) -> None:
        self.close = close  # the request asked to close the connection after its answer


class LeanConnection(asyncio.Protocol):
    """See the module docstring. ``delegate`` is aiohttp's handler once handed over."""

    def __init__(self, lane: LeanLane) -> None:
        self.lane = lane
        self.delegate: asyncio.Protocol | None = None
        self.transport: Any = None
        self._reader = HeadReader()
        self._raw = b""  # received, from the start of the first request not yet taken
        self._parts: list[bytes] = []  # received after _raw, not yet joined to it
        self._size = 0  # len(_raw) + the sizes of _parts
        self._need = 0  # bytes needed before another look (a body still coming)
        self._pending: tuple[LeanRequest, int] | None = None  # a head waiting for its body
        self._owed: Slot | None = None  # the request being served
        self._out: list[bytes] = []  # answers written at the end of the current read
        self._stopped = False  # no more requests taken: a close was asked, or the node stops
        self._handing_off = False
        self._reading_paused = False
        self._writing_paused = False
        self._taking = False
        self._last_active = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- the transport's events -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        lane = self.lane
        if lane.tcp_keepalive:
            tcp_keepalive(transport)  # type: ignore[arg-type]  # as aiohttp's handler does
        lane.connections.add(self)
        self._last_active = lane.loop.time()
        self._timer = lane.loop.call_later(lane.idle_timeout_s, self._idle_check)
        if lane.stopping:
            self.stop()

    def data_received(self, data: bytes) -> None:
        if self.delegate is not None:
            self.delegate.data_received(data)
            return
        self._last_active = self.lane.loop.time()
        if self._stopped:
            return  # after Connection: close, or while the node stops: read, not served
        if self._size:
            self._parts.append(data)
            self._size += len(data)
        else:
            self._raw = data
            self._size = len(data)
        if (self._size >= self._need and self._owed is None and not self._handing_off
                and not self._reading_paused):
            self._take()
        elif self._size >= READ_AHEAD:
            self._update_reading()  # a request is being served: pause past the read-ahead

    def eof_received(self) -> bool | None:
        if self.delegate is not None:
            return self.delegate.eof_received()
        # As aiohttp does: the client's EOF closes the transport, answers owed or not.
        return None

    def pause_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.pause_writing()
            return
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.resume_writing()
            return
        self._writing_paused = False
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.delegate is not None:
            self.delegate.connection_lost(exc)
            return
        self._finish()
        # An operation in flight goes on (a put still becomes durable, as with aiohttp, which
        # does not cancel handlers either); its answer has nowhere to go.
        self._owed = None
        self._raw, self._parts, self._size = b"", [], 0

    # -- requests ---------------------------------------------------------------------------

    def _take(self) -> None:
        """Takes the whole requests received, one after the other, until one is not the
        lane's or one is still being served."""
        self._taking = True  # an answer ready at once is written with the others, after
        try:
            self._take_requests()
        finally:
            self._taking = False
        if self._out:
            out, self._out = self._out, []
            self._write(out[0] if len(out) == 1 else b"".join(out))

    def _take_requests(self) -> None:
        lane = self.lane
        while (self._size and self._owed is None and not self._stopped
               and not self._handing_off):
            if self._parts:
                self._raw = b"".join((self._raw, *self._parts))
                self._parts = []
            raw = self._raw
            if self._pending is None:
                if raw[0] not in b"GP":
                    self._hand_off()
                    return
                end = raw.find(b"\r\n\r\n", 0, MAX_HEAD)
                if end < 0:
                    if len(raw) >= MAX_HEAD:
                        self._hand_off()
                    return
                head_len = end + 4
                request = self._reader.read(raw[:head_len], lane.max_body)
                if request is None:
                    self._hand_off()
                    return
            else:
                request, head_len = self._pending
            need = head_len + request.content_length
            if not request.keep_alive and len(raw) > need:
                # More after a close: aiohttp's llhttp refuses the whole read (400).
                self._hand_off()
                return
            if len(raw) < need:
                self._pending = (request, head_len)
                self._need = need
                return
            self._pending = None
            self._need = 0
            body = b""
            if request.content_length:
                body = raw[head_len:need]
                if not self._reader.body(body):
                    self._hand_off()
                    return
            self._raw = raw[need:]
            self._size = len(self._raw)
            lane.gate.delivered(self.transport)
            slot = self._owed = Slot(close=not request.keep_alive)
            if slot.close:
                self._stopped = True
            lane.dispatch(self, slot, request, body)
        self._update_reading()

    def answered(self, slot: Slot, data: bytes) -> None:
        """The answer to the request being served is ready: written (at the end of the
        current read if one is being taken), then the next request is taken."""
        if self._owed is not slot:
            return  # the connection is gone
        self._owed = None
        self._last_active = self.lane.loop.time()
        if self._taking:
            self._out.append(data)
        else:
            self._write(data)
        if slot.close:
            return  # closed once written (_write)
        if self._handing_off:
            self._complete_hand_off()
        elif not self._taking:
            self._update_reading()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        if self._stopped and self._owed is None and not self._handing_off:
            transport.close()  # after a close request, or as the node stops

    # -- handing over to aiohttp ------------------------------------------------------------

    def _hand_off(self) -> None:
        self._handing_off = True
        if self._owed is not None:
            self._update_reading()  # nothing more is read until the answer owed is out
        else:
            self._complete_hand_off()

    def _complete_hand_off(self) -> None:
        if self._out:  # answers taken in this read go first
            out, self._out = self._out, []
            self.transport.write(b"".join(out))
        self._finish()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        handler = self.lane.make_aiohttp_handler()
        self.delegate = handler
        handler.connection_made(self.transport)
        if self._writing_paused:
            handler.pause_writing()
        raw = b"".join((self._raw, *self._parts))
        self._raw, self._parts, self._size = b"", [], 0
        if raw:
            handler.data_received(raw)

    # -- upkeep -----------------------------------------------------------------------------

    def _update_reading(self) -> None:
        """Pauses or resumes the socket (answers owed over the bound, a client that does not
        read, a handover waiting); once it may read, takes what was already received."""
        pause = (self._writing_paused or self._handing_off
                 or (self._owed is not None and self._size >= READ_AHEAD))
        if pause != self._reading_paused and not self.transport.is_closing():
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
        if (not pause and not self._taking and self._owed is None and self._size
                and self._size >= self._need and not self._stopped):
            self._take()

    def _idle_check(self) -> None:
        self._timer = None
        if self.delegate is not None or self.transport.is_closing():
            return
        lane = self.lane
        idle_for = lane.loop.time() - self._last_active
        if self._owed is None and idle_for >= lane.idle_timeout_s:
            self.transport.close()
            return
        self._timer = lane.loop.call_later(max(lane.idle_timeout_s - idle_for, 0.05),
                                           self._idle_check)

    def stop(self) -> None:
        """The node is stopping: take no new request, close once the answers owed are out
        (aiohttp's handlers close their keep-alive connections the same way)."""
        if self.delegate is not None:
            return
        self._stopped = True
        if self._owed is None and not self._handing_off:
            self.transport.close()

    def abort(self) -> None:
        if self.delegate is None and self.transport is not None:
            self.transport.abort()

    def _finish(self) -> None:
        """No longer the lane's: its timer and its place in the lane go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.lane.forget(self)

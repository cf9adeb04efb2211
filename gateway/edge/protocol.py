"""uvicorn's h11 connection behind a cap on open connections and a deadline on each request's headers.

uvicorn bounds the header size (``h11_max_incomplete_event_size``) but not the time a client may take
to send them: a connection trickling one byte a second stays open for ever. ``EdgeProtocol`` is an
``asyncio.Protocol`` that owns uvicorn's ``H11Protocol`` and passes it every event, unchanged, so the
server behaves as before. Beside it, a second h11 parser reads the same bytes only to see where each
request's headers end:

* the clock of a request starts when its first byte arrives (for the first request, when the
  connection opens) and stops when its headers are complete; past ``header_timeout_s`` the
  connection is closed, after a 408 when nothing was answered on it yet;
* headers that are malformed or larger than the bound get an OpenAI-shaped 400 or 431 instead of the
  server's plain-text 400 (on the connection's first request; later ones are left to uvicorn, which
  may still be answering an earlier request on the same socket);
* a connection past ``max_connections`` open ones gets a 503 with ``Retry-After`` and is closed before
  it is read (uvicorn's own ``limit_concurrency`` answers in plain text, without ``Retry-After``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from gateway.edge.answers import raw_error


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000


class EdgeProtocol(asyncio.Protocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.inner = H11Protocol(config, server_state, app_state, _loop)
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.requests = 0  # requests whose headers arrived on this connection
        self.waiting = True  # between requests: the next byte starts the header clock
        self.timer: asyncio.TimerHandle | None = None
        self.shadow: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # a stream server's
        self.transport = transport
        if len(self.server_state.connections) >= self.limits.max_connections:
            self.refused = True
            message = "The gateway has too many open connections; retry later."
            transport.write(raw_error(503, message, "too_many_connections", retry_after=True))
            transport.close()
            return
        self.inner.connection_made(transport)
        self._start_clock()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.shadow is not None and not self._follow(self.shadow, data):
            return
        self.inner.data_received(data)

    def eof_received(self) -> None:
        if not self.refused:
            self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    def _follow(self, shadow: h11.Connection, data: bytes) -> bool:
        """Feed the shadow parser; False when the edge answered and closed the connection itself."""
        if self.waiting:
            self._start_clock()
        shadow.receive_data(data)
        try:
            while (event := shadow.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                if isinstance(event, h11.Request):
                    self._stop_clock()
                    if _head_size(event) > self.limits.max_header_bytes:
                        # h11 bounds only a head still incomplete; one that arrived whole in a
                        # single read can be larger.
                        self.shadow = None
                        self._refuse(431)
                        return False
                    self.requests += 1
                elif isinstance(event, h11.EndOfMessage):
                    self._next_request(shadow)
                    if self.shadow is None:
                        break
        except h11.RemoteProtocolError as exc:
            self.shadow = None
            self._stop_clock()
            if self.requests == 0:
                self._refuse(exc.error_status_hint)
                return False
            return True
        if self.waiting and self.shadow is not None and self.shadow.trailing_data[0]:
            self._start_clock()  # a pipelined request has begun
        return True

    def _next_request(self, shadow: h11.Connection) -> None:
        # The shadow never answers for real: a stand-in answer lets it read the next request.
        try:
            shadow.send(h11.Response(status_code=204, headers=[]))
            shadow.send(h11.EndOfMessage())
            shadow.start_next_cycle()
        except h11.LocalProtocolError:  # the connection cannot carry another request
            self.shadow = None
            return
        self.waiting = True

    def _start_clock(self) -> None:
        self.waiting = False
        if self.timer is None:
            self.timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _stop_clock(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _headers_late(self) -> None:
        self.timer = None
        self.shadow = None
        self._refuse(408)

    def _refuse(self, status: int) -> None:
        """Close the connection; answer first when nothing was answered on it yet (else the answer
        could land in the middle of an earlier response)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.requests > 0:
            self.transport.close()
            return
        if status == 408:
            answer = raw_error(408, "The request headers were not received in time.", "request_timeout")
        elif status == 431:
            limit = self.limits.max_header_bytes
            answer = raw_error(431, f"The request headers exceed {limit} bytes.", "header_fields_too_large")
        else:
            answer = raw_error(400, "Malformed HTTP request.", "invalid_http_request")
        self.transport.write(answer)
        self.transport.close()


def _head_size(request: h11.Request) -> int:
    """The request line and headers as received, give or take their whitespace."""
    size = len(request.method) + len(request.target) + 12
    for name, value in request.headers.raw_items():
        size += len(name) + len(value) + 4
    return size


def edge_protocol(limits: ConnectionLimits) -> type[EdgeProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, bound to ``limits``."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


__all__ = ["ConnectionLimits", "EdgeProtocol", "edge_protocol"]

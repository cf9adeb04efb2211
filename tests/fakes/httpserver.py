"""A small HTTP/1.1 server on asyncio protocols: keep-alive, chunked streaming, and disconnects seen at once.

Hand-written rather than uvicorn so that the fake engine is cheap per chunk and learns of a client close the
moment the socket reports it (``connection_lost``), which is what the abort tests measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 32 * 1024 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    raw_headers: list[tuple[str, str]]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


class ConnectionClosedError(ConnectionError):
    """The peer went away while a response was being written."""


class Exchange:
    """One request's response side. A handler answers once with ``send`` or streams with ``start_stream``."""

    __slots__ = ("_conn", "aborted_at", "finished", "on_abort", "request", "server_closed", "started")

    def __init__(self, conn: _Connection, request: Request) -> None:
        self._conn = conn
        self.request = request
        self.started = False
        self.finished = False
        self.server_closed = False
        self.aborted_at: float | None = None
        self.on_abort: Callable[[Exchange], None] | None = None

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        fields = [("content-length", str(len(body)))]
        if content_type is not None:
            fields.append(("content-type", content_type))
        head = _head(status, [*fields, *headers])
        self.started = True
        await self._conn.write(head + body)
        self.finished = True

    async def start_stream(
        self, status: int, content_type: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        head = _head(status, [("content-type", content_type), *headers, ("transfer-encoding", "chunked")])
        self.started = True
        await self._conn.write(head)

    async def write(self, data: bytes) -> None:
        if data:
            await self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))

    def write_nowait(self, data: bytes) -> bool:
        """Queue one piece of the stream; False means the peer is slow: ``await drain()`` before more."""
        return self._conn.write_nowait(b"%x\r\n%b\r\n" % (len(data), data))

    async def drain(self) -> None:
        await self._conn.drain()

    async def end_stream(self) -> None:
        await self._conn.write(b"0\r\n\r\n")
        self.finished = True

    def abort(self) -> None:
        """Drop the connection without finishing the response (an engine crash, as the client sees it)."""
        self.server_closed = True
        self._conn.drop()


Handler = Callable[[Request, Exchange], Awaitable[None]]


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False

    # -- asyncio callbacks --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._task is None:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionClosedError())
            self._drain.exception()  # mark retrieved: nobody may be waiting any more
        ex = self._exchange
        if ex is not None and not ex.finished and not ex.server_closed and not self._server.closing:
            ex.aborted_at = time.monotonic()
            if ex.on_abort is not None:
                ex.on_abort(ex)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- writing ------------------------------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        if self.closed or self._transport is None:
            raise ConnectionClosedError()
        self._transport.write(data)
        return not self._paused

    async def drain(self) -> None:
        if self._paused:
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def drop(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- request loop -------------------------------------------------------------------------------------
    def _next_request(self) -> None:
        try:
            request = _parse(self._buf)
        except _BadRequestError as exc:
            self._reply_and_close(400, str(exc))
            return
        if request is None:
            if len(self._buf) > _MAX_HEAD + _MAX_BODY:
                self._reply_and_close(413, "too large")
            return
        self._exchange = Exchange(self, request)
        self._task = asyncio.get_running_loop().create_task(self._run(self._exchange))

    async def _run(self, ex: Exchange) -> None:
        try:
            await self._server.handler(ex.request, ex)
        except (asyncio.CancelledError, ConnectionClosedError):
            return
        except Exception as exc:
            self._server.errors.append(exc)
            if not ex.started and not self.closed:
                with contextlib.suppress(ConnectionClosedError):
                    await ex.send(500, b'{"detail":"fake engine error"}')
            else:
                ex.server_closed = True
                self.drop()
            return
        finally:
            self._task = None
        if not ex.finished:
            ex.server_closed = True
            self.drop()
            return
        self._exchange = None
        if not ex.request.keep_alive:
            if self._transport is not None:
                self._transport.close()
            return
        if self._buf and not self.closed:
            self._next_request()

    def _reply_and_close(self, status: int, message: str) -> None:
        if self._transport is None:
            return
        body = message.encode()
        head = _head(status, [("content-length", str(len(body))), ("content-type", "text/plain")])
        self._transport.write(head + body)
        self._transport.close()


class HttpServer:
    """Serves ``handler`` on one listening socket; ``errors`` keeps any exception a handler raised."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[_Connection] = set()
        self.errors: list[BaseException] = []
        self.closing = False
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=1024)
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self.connections if c.task is not None]
        for conn in list(self.connections):
            conn.drop()
        # handlers see the drop as a cancellation; let them unwind before the loop goes away
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _BadRequestError(ValueError):
    pass


def _parse(buf: bytearray) -> Request | None:
    """Take one complete request off the front of ``buf``; None if more bytes are needed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise _BadRequestError("request head too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadRequestError("bad request line") from exc
    raw_headers: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequestError("bad header line")
        key, value = name.strip().lower(), value.strip()
        raw_headers.append((key, value))
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _dechunk(buf, start)
        if decoded is None:
            return None
        body, consumed = decoded
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise _BadRequestError("bad content-length") from exc
        if length < 0 or length > _MAX_BODY:
            raise _BadRequestError("bad content-length")
        if len(buf) < start + length:
            return None
        body, consumed = bytes(buf[start : start + length]), start + length
    del buf[:consumed]
    path, _, query = target.partition("?")
    return Request(method, path, query, version, headers, raw_headers, body)


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise _BadRequestError("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:  # skip trailer fields
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if len(body) > _MAX_BODY:
            raise _BadRequestError("body too large")
        pos += size + 2


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    # uvicorn's order: date and server first, then the application's headers
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"date: {formatdate(usegmt=True)}",
        "server: uvicorn",
    ]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


__all__ = ["ConnectionClosedError", "Exchange", "Handler", "HttpServer", "Request"]

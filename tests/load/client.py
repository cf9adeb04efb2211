"""Streaming chat requests over kept-alive HTTP/1.1 sockets, each checked to end with ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

_CHUNKED_END = b"0\r\n\r\n"
_DONE = b"data: [DONE]"
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")


def chat_request(port: int, model: str, prompt: str = "soak") -> bytes:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    """Outcomes so far; read by the reporter while the load runs (one event loop: no locks)."""

    started: int = 0
    done: int = 0  # 200, ended with [DONE]
    no_done: int = 0  # 200, the response ended without [DONE]
    errors: int = 0  # any other status, a closed connection, a timeout
    first_errors: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        return self.started - self.done - self.no_done - self.errors

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what[:300])


class StreamError(Exception):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port, limit=1 << 20))

    def close(self) -> None:
        self.writer.close()

    async def _refusal(self, head: bytes) -> str:
        """The status line and the start of the error body (its message says which limit or timeout)."""
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            return status
        body = await self.reader.readexactly(int(match.group(1)))
        return f"{status} {body[:200].decode('utf-8', 'replace')}"

    async def stream(self, request: bytes) -> bool:
        """One streamed response; True when it ended with [DONE]. Raises StreamError on a non-200."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise StreamError(await self._refusal(head))
        if b"transfer-encoding: chunked" not in head.lower():
            raise StreamError("a 200 that is not a chunked stream")
        tail, done = b"", False
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise StreamError("the server closed the connection mid-stream")
            tail = tail[-64:] + data
            done = done or _DONE in tail
            if tail.endswith(b"\r\n" + _CHUNKED_END) or tail == _CHUNKED_END:
                return done


async def stream_slot(
    host: str, port: int, request: bytes, until: float, stream_s: float, tally: Tally, *, first: bool = False
) -> None:
    """One concurrent stream: requests back to back until the loop's clock passes ``until``, each given
    ``stream_s`` seconds at most; with ``first`` at least one request is sent."""
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        while first or loop.time() < until:
            first = False
            tally.started += 1
            try:
                if conn is None:
                    conn = await Connection.open(host, port)
                async with asyncio.timeout(stream_s):  # a stuck stream counts as failed
                    ended_with_done = await conn.stream(request)
            except (
                StreamError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.5)  # a failing gateway is not hammered in a tight loop
                continue
            if ended_with_done:
                tally.done += 1
            else:
                tally.no_done += 1
    finally:
        if conn is not None:
            conn.close()


__all__ = ["Connection", "StreamError", "Tally", "chat_request", "stream_slot"]

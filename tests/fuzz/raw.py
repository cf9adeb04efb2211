"""HTTP/1.1 over a bare socket: requests no client library would send, and every answer read back."""

from __future__ import annotations

import contextlib
import socket

from tests.fuzz.checks import Answer


def exchange(port: int, request: bytes, timeout: float = 10.0) -> list[Answer]:
    """Send ``request`` as is, read until the server closes (or ``timeout``), parse every response.

    A request should ask for ``connection: close``, else this waits for the keep-alive timeout.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # It may answer and close before reading everything: what it answered is read below. No half-close:
        # uvicorn takes the end of the client's stream for a disconnect.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        chunks: list[bytes] = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return parse_responses(b"".join(chunks))


def parse_responses(data: bytes) -> list[Answer]:
    answers: list[Answer] = []
    while data.startswith(b"HTTP/"):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"truncated response head: {data[:300]!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            body, data = rest[:length], rest[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, data = _dechunk(rest)
        else:
            body, data = rest, b""
        answers.append(Answer(status, headers, body))
    assert not data.strip(), f"bytes after the last response: {data[:200]!r}"
    return answers


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            return body, data.partition(b"\r\n")[2]
        body, data = body + data[:size], data[size + 2 :]


def request(
    method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    """One request's bytes; header values are written as latin-1 so any byte can be sent."""
    head = f"{method} {target} HTTP/1.1\r\n"
    for name, value in headers or []:
        head += f"{name}: {value}\r\n"
    return head.encode("latin-1", "replace") + b"\r\n" + body


__all__ = ["exchange", "parse_responses", "request"]

"""The edge's refusals: OpenAI-shaped error bodies, as ASGI messages or as raw HTTP/1.1 bytes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from gateway.errors import error_json

# Every 503 the gateway sends carries this ``Retry-After`` unless its maker chose one.
RETRY_AFTER_S: Final = 5

_TYPES: Final = {
    408: "timeout_error",
    421: "invalid_request_error",
    431: "invalid_request_error",
    400: "invalid_request_error",
    415: "invalid_request_error",
    503: "service_unavailable",
}


def error_body(status: int, message: str, code: str) -> bytes:
    return error_json(status, message, _TYPES.get(status, "invalid_request_error"), code=code)


def error_headers(body: bytes, *, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return headers


def raw_error(status: int, message: str, code: str, retry_after: bool = False) -> bytes:
    """A complete ``Connection: close`` response, for answers written straight to the socket."""
    body = error_body(status, message, code)
    headers = error_headers(body, close=True)
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
    return head + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body


__all__ = ["RETRY_AFTER_S", "error_body", "error_headers", "raw_error"]

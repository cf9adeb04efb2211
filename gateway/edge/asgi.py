"""Request-level checks at the edge of the app, before anything reads the body or a token.

* more header fields than ``max_headers``: 431;
* with ``--auth none``, a ``Host`` that is not loopback: 421 (a web page that DNS-rebinds a name to
  127.0.0.1 would otherwise read the answers of an unauthenticated gateway);
* a body sent to a JSON route without ``Content-Type: application/json``: 415 (``text/plain`` and form
  bodies are what a browser sends cross-site without a preflight);
* the whole body must arrive within ``body_timeout_s``: 408 and the connection closed (a
  ``Content-Length`` larger than the body, or a trickle, would otherwise hold the request forever);
* a client that leaves during the upload: nothing is answered, so the access log says 499;
* a 503 without ``Retry-After`` gets one.

Only the body read is timed: once the body is complete, ``receive`` is the server's (the request flow
waits on it for a disconnect while it streams).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.auth.config import is_loopback_host
from gateway.edge.answers import RETRY_AFTER_S, error_body, error_headers
from gateway.telemetry.asgi import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.settings import Settings

JSON_PREFIXES: Final = ("/v1/",)
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_RETRY_AFTER: Final = (b"retry-after", str(RETRY_AFTER_S).encode())


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    body_timeout_s: float = 30.0
    max_headers: int = 100
    loopback_host_only: bool = False  # --auth none: answer only requests addressed to loopback
    json_prefixes: tuple[str, ...] = JSON_PREFIXES


def edge_config(settings: Settings) -> EdgeConfig:
    return EdgeConfig(
        body_timeout_s=settings.server.body_timeout,
        max_headers=settings.server.max_headers,
        loopback_host_only="none" in settings.auth.modes,
    )


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, config: EdgeConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal, close=False)
            return
        exchange = _Exchange(receive, send, self.config.body_timeout_s)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not exchange.finished:
                raise
            # The app failed because the edge cut its body read; the answer (408, or none: 499) stands.
        if exchange.timed_out and not exchange.started:
            exchange.started = True
            message = "The request body was not received in time."
            await _answer(send, 408, message, "request_timeout", close=True)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        config = self.config
        if len(headers) > config.max_headers:
            return 431, f"Too many header fields (at most {config.max_headers}).", "header_fields_too_large"
        if config.loopback_host_only:
            host = _header(headers, b"host")
            if host is not None and not is_loopback_host(_hostname(host)):
                message = (
                    "This gateway runs without authentication and answers only requests addressed to "
                    "a loopback host (127.0.0.1, localhost or [::1])."
                )
                return 421, message, "misdirected_request"
        if scope["method"] in _BODY_METHODS and scope["path"].startswith(config.json_prefixes):
            content_type = _header(headers, b"content-type") or ""
            if content_type.split(";", 1)[0].strip().lower() != "application/json":
                return 415, "Content-Type must be application/json.", "unsupported_media_type"
        return None


class _Exchange:
    """One request's ``receive`` and ``send`` as the app sees them."""

    __slots__ = (
        "_deadline",
        "_receive",
        "_send",
        "body_done",
        "finished",
        "started",
        "timed_out",
        "timeout_s",
    )

    def __init__(self, receive: Receive, send: Send, timeout_s: float) -> None:
        self._receive = receive
        self._send = send
        self.timeout_s = timeout_s
        self._deadline: float | None = None
        self.body_done = False
        self.finished = False  # the edge ended the exchange: the app's answer is dropped
        self.started = False  # a response has started on the wire
        self.timed_out = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self.timeout_s
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self.timed_out = self.finished = True
            return {"type": "http.disconnect"}
        if message["type"] == "http.disconnect":
            self.finished = True  # left during the upload: nothing to answer (499)
        elif not message.get("more_body", False):
            self.body_done = True
        return message

    def send(self, message: Message) -> Any:
        if self.finished:
            return _nothing()
        if message["type"] == "http.response.start":
            self.started = True
            if message["status"] == 503 and _header(message.get("headers", ()), b"retry-after") is None:
                message = {**message, "headers": [*message.get("headers", ()), _RETRY_AFTER]}
        return self._send(message)


async def _nothing() -> None:
    return None


async def _answer(send: Send, status: int, message: str, code: str, *, close: bool) -> None:
    body = error_body(status, message, code)
    await send({"type": "http.response.start", "status": status, "headers": error_headers(body, close=close)})
    await send({"type": "http.response.body", "body": body})


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _hostname(host: str) -> str:
    """The name of a ``Host`` value: ``[::1]:8080`` → ``::1``, ``localhost:8080`` → ``localhost``."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name:
        return name if port.isdigit() else host  # ``localhost:1.evil.example`` is no loopback name
    return host


__all__ = ["JSON_PREFIXES", "EdgeConfig", "EdgeMiddleware", "edge_config"]

"""The SERVER span of each HTTP request: a plain ASGI middleware on OpenTelemetry's public API.

Wrapped around the whole Litestar app (unknown paths and methods included). The caller's trace context is
read with the configured propagators; the span carries the stable HTTP attributes the gateway's traces
use (method, path, scheme, route, status, client address, user agent) and is named ``{method} {route}``
once Litestar has routed the request, just ``{method}`` for a path no route matches (a scanner's random
paths must not become span names) and ``HTTP`` for a method outside the standard set. It stays current,
with the app's tracer, for the whole request, streamed body included, so the request flow's child spans,
logs and audit records name it.

Request and response headers are never recorded: they carry bearer tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from opentelemetry.trace import Span, Tracer

from gateway.telemetry.asgi import RESPONSE, TRACE_ID, ASGIApp, Receive, Scope, Send, StatusSend
from gateway.telemetry.spans import (
    EXCLUDED_PATHS,
    Attributes,
    Telemetry,
    close_request,
    open_request,
    set_error,
)

HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_USER_AGENT_MAX: Final = 256


class ServerSpanMiddleware:
    """One SERVER span per HTTP request, ended when the response (stream included) is complete."""

    def __init__(self, app: ASGIApp, tracer: Tracer, untraced_paths: frozenset[str]) -> None:
        self.app = app
        self._tracer = tracer
        self._untraced = untraced_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._untraced:
            await self.app(scope, receive, send)
            return
        # Any token is a valid method on the wire: unknown ones become `_OTHER` and the span `HTTP`.
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        attributes: Attributes = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        # Decoded for the propagators only; never recorded.
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        user_agent = carrier.get("user-agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent[:_USER_AGENT_MAX]
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        span_name = method if method != "_OTHER" else "HTTP"
        span, token = open_request(self._tracer, span_name, carrier, attributes)
        state = scope.setdefault("state", {})
        state[TRACE_ID] = span.get_span_context().trace_id  # for the access line
        # The access-log middleware outside already keeps the status; wrap send only where it is absent.
        response: StatusSend | None = state.get(RESPONSE)
        if response is None:
            response = send = StatusSend(send)
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            set_error(span, type(exc).__qualname__)
            raise
        finally:
            close_request(token)
            if span.is_recording():
                _finish(span, scope.get("path_template"), span_name, response.status)
            span.end()


def _finish(span: Span, route: str | None, span_name: str, status: int) -> None:
    if route:  # set by Litestar's router on the shared scope
        span.update_name(f"{span_name} {route}")
        span.set_attribute("http.route", route)
    if status:
        span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            set_error(span, str(status))


def server_span_middleware(telemetry: Telemetry) -> Callable[[ASGIApp], ASGIApp] | None:
    """Wraps an ASGI app in the server-span middleware; ``None`` when tracing is off."""
    tracer = telemetry.tracer
    if tracer is None:
        return None
    return lambda app: ServerSpanMiddleware(app, tracer, frozenset(EXCLUDED_PATHS))


__all__ = ["HTTP_RESPONSE_STATUS_CODE", "ServerSpanMiddleware", "server_span_middleware"]

"""The server span of each request: the middleware class Litestar's OpenTelemetry plugin installs.

Litestar's default middleware wraps ``opentelemetry-instrumentation-asgi``, which per request decodes every
header, records both generations of HTTP semantic conventions, keeps duration and size histograms, and per
ASGI message runs a send wrapper with a propagator lookup. That made tracing cost more CPU than the rest of a
short request. This class is the plugin's documented extension point (``OpenTelemetryConfig.middleware_class``)
and does only what the gateway's traces use: one SERVER span with the required stable HTTP attributes plus
the client address and user agent, the caller's W3C ``traceparent`` continued, the response status, and a
span current for the whole request. The span is named ``{method} {route}`` once Litestar has routed the
request, and just ``{method}`` for a path no route matches, as the HTTP conventions ask (a scanner's
random paths must not become span names). Every attribute costs about 2 µs to export, so the optional ones that
only repeat the deployment (server address and port, protocol version) are left out.

Request and response headers are never recorded: they carry bearer tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from litestar.enums import ScopeType
from litestar.middleware.base import AbstractMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryInstrumentationMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.telemetry.access import TRACE_ID
from gateway.telemetry.asgi import StatusSend

if TYPE_CHECKING:
    from litestar.plugins.opentelemetry import OpenTelemetryConfig
    from litestar.types import ASGIApp, Receive, Scope, Send

HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
_W3C: Final = TraceContextTextMapPropagator()
_TRACE_HEADERS: Final = (b"traceparent", b"tracestate")
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


class ServerSpanMiddleware(OpenTelemetryInstrumentationMiddleware):
    """One SERVER span per HTTP request, ended when the response (stream included) is complete."""

    def __init__(self, app: ASGIApp, config: OpenTelemetryConfig) -> None:
        # Not the parent's __init__: it would build the ASGI instrumentation this class replaces.
        AbstractMiddleware.__init__(
            self,
            app=app,
            scopes=config.scopes,
            exclude=config.exclude,
            exclude_opt_key=config.exclude_opt_key,
        )
        if config.tracer is not None:
            self._tracer: Tracer = config.tracer
        else:
            self._tracer = trace.get_tracer(
                "menshen.http", __version__, tracer_provider=config.tracer_provider
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        # Any token is a valid method on the wire: unknown ones become `_OTHER` and the span `HTTP`.
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        path = scope["path"]
        carrier: dict[str, str] = {}
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scope.get("scheme", "http"),
        }
        for name, value in scope["headers"]:
            if name in _TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")[:256]
        client = scope.get("client")
        if client is not None:
            attributes["client.address"] = client[0]
        parent = _W3C.extract(carrier) if carrier else None
        # Named by method alone until routing names the route: an unknown path never becomes a span name.
        span_name = method if method != "_OTHER" else "HTTP"
        span = self._tracer.start_span(span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        send_with_status = StatusSend(send)
        span_context = span.get_span_context()
        if span_context.is_valid:
            scope["state"][TRACE_ID] = format(span_context.trace_id, "032x")  # for the access line
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            otel_context.detach(token)
            route = scope.get("path_template")  # set by Litestar's router on the shared scope
            if route:
                span.update_name(f"{span_name} {route}")
                span.set_attribute("http.route", route)
            status = send_with_status.status
            if status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            span.end()


__all__ = ["HTTP_RESPONSE_STATUS_CODE", "ServerSpanMiddleware"]

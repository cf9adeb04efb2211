"""The server span of each request: the middleware class Litestar's OpenTelemetry plugin installs.

Litestar's default middleware wraps ``opentelemetry-instrumentation-asgi``, which per request decodes every
header, records both generations of HTTP semantic conventions, keeps duration and size histograms, and per
ASGI message runs a send wrapper with a propagator lookup. That made tracing cost more CPU than the rest of a
short request. This class is the plugin's documented extension point (``OpenTelemetryConfig.middleware_class``)
and does only what the gateway's traces use: one SERVER span with the required stable HTTP attributes plus
the client address and user agent, the caller's W3C ``traceparent`` continued, the response status, and the
request's trace (``request_trace``: cheap span records exported when the request ends) current for the whole
request. The span is named ``{method} {route}`` once Litestar has routed the
request, and just ``{method}`` for a path no route matches, as the HTTP conventions ask (a scanner's
random paths must not become span names). Every attribute is recorded, encoded and exported with every
request, so the optional ones that only repeat the deployment (server address and port, protocol
version) are left out.

Request and response headers are never recorded: they carry bearer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from litestar.enums import ScopeType
from litestar.middleware.base import AbstractMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryInstrumentationMiddleware
from opentelemetry.trace import SpanKind

from gateway.telemetry.access import RESPONSE, TRACE_ID
from gateway.telemetry.asgi import StatusSend
from gateway.telemetry.request_trace import AttributeValue, RequestTracer, activate, deactivate

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
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
        if not isinstance(config, ServerSpanConfig) or config.request_tracer is None:
            raise TypeError("ServerSpanMiddleware is configured with a ServerSpanConfig")
        if config.exclude or config.exclude_opt_key:  # see the end of this module
            raise ValueError("ServerSpanConfig excludes paths with untraced_paths only")
        self._tracer: RequestTracer = config.request_tracer
        # Exact paths, checked here: the plugin's `exclude` regular expressions cost a search per request.
        self._untraced = config.untraced_paths

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in self._untraced:
            await self.app(scope, receive, send)
            return
        # Any token is a valid method on the wire: unknown ones become `_OTHER` and the span `HTTP`.
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        carrier: dict[str, str] = {}
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": scope["path"],
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
        # Named by method alone until routing names the route: an unknown path never becomes a span name.
        span_name = method if method != "_OTHER" else "HTTP"
        request = self._tracer.start(span_name, SpanKind.SERVER, attributes, carrier)
        span = request.server
        state = scope["state"]
        state[TRACE_ID] = request.trace_id  # for the access line
        # The access-log middleware outside already keeps the status; wrap send only where it is absent.
        response: StatusSend | None = state.get(RESPONSE)
        if response is None:
            response = send = StatusSend(send)
        token = activate(request)
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_error()
            raise
        finally:
            deactivate(token)
            route = scope.get("path_template")  # set by Litestar's router on the shared scope
            if route:
                span.name = f"{span_name} {route}"
                span.set_attribute("http.route", route)
            status = response.status
            if status:
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_error(span.error or "")
            request.finish()

    __call__ = _traced


@dataclass
class ServerSpanConfig(OpenTelemetryConfig):
    """Litestar's plugin configuration, plus the ``RequestTracer`` the server spans are made with and the
    exact paths that are never traced."""

    request_tracer: RequestTracer | None = None
    untraced_paths: frozenset[str] = frozenset()
    middleware_class: type[OpenTelemetryInstrumentationMiddleware] = ServerSpanMiddleware


# Litestar's AbstractMiddleware wraps each subclass's __call__ in a second coroutine per request that checks
# the scope type, the `exclude` patterns and `exclude_opt_key` again; `_traced` checks the type and the
# untraced paths itself, and `__init__` refuses the other two, so the ASGI call goes to it directly.
ServerSpanMiddleware.__call__ = ServerSpanMiddleware._traced  # type: ignore[method-assign]

__all__ = ["HTTP_RESPONSE_STATUS_CODE", "ServerSpanConfig", "ServerSpanMiddleware"]

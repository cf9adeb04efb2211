"""Spans of a request on the stock OpenTelemetry SDK: names, GenAI attributes, decision events, propagation.

The server-span middleware (``gateway.telemetry.server_span``) opens each request's SERVER span and makes
it current, together with the app's tracer, in OpenTelemetry's context. The helpers here read that context:
``phase`` and ``start_span`` open child spans with the request's tracer, ``current_server_span`` finds the
SERVER span from anywhere in the request. Outside a traced request, or on a request the sampler dropped,
every helper returns at once with a non-recording span, so an untraced request costs almost nothing.
Nothing here is called per chunk: time to first token and usage are set once, at the end of the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from gateway import __version__
from gateway.telemetry.scrub import redact

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.sdk.trace import TracerProvider

    from gateway.guardrails.pipeline import Decision

# "chat", "text_completion", "embeddings" (GenAI operation names).
Operation = str

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/).
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
# Seconds, as the semconv metric of the same name.
GEN_AI_TTFT: Final = "gen_ai.server.time_to_first_token"
MENSHEN_CLIENT_ID: Final = "menshen.client_id"
MENSHEN_POLICY_VERSION: Final = "menshen.policy.version"
MENSHEN_STREAM: Final = "menshen.stream"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
DECISION_EVENT: Final = "menshen.decision"

# Child spans of the server span, one per request phase (ARCHITECTURE.md, "The flow").
SPAN_AUTH: Final = "menshen.auth"
SPAN_ADMISSION: Final = "menshen.admission"
SPAN_INPUT_GUARD: Final = "menshen.input_guard"
SPAN_STREAM: Final = "menshen.stream"

# Paths never traced: probes and scrapes would drown the real traffic.
EXCLUDED_PATHS: Final[tuple[str, ...]] = ("/healthz", "/readyz", "/metrics")
_SAFE_DETAIL: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
# Keys of the request's tracer and SERVER span in OpenTelemetry's context (plain strings: no import work).
_TRACER_KEY: Final = "menshen.tracer"
_SERVER_KEY: Final = "menshen.server_span"
# Only W3C trace context goes upstream: baggage set by a client never reaches the engine.
_W3C: Final = TraceContextTextMapPropagator()

Attributes = dict[str, AttributeValue]


def request_attributes(
    *,
    operation: Operation,
    model: str,
    max_tokens: int | None = None,
    temperature: float | None = None,
    stream: bool | None = None,
    client_id: str | None = None,
    policy_version: str | None = None,
) -> Attributes:
    """GenAI request attributes of the server span (``gen_ai.provider.name`` is on the engine span)."""
    attrs: Attributes = {GEN_AI_OPERATION_NAME: operation, GEN_AI_REQUEST_MODEL: model}
    if max_tokens is not None:
        attrs[GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if temperature is not None:
        attrs[GEN_AI_REQUEST_TEMPERATURE] = temperature
    if stream is not None:
        attrs[MENSHEN_STREAM] = stream
    if client_id is not None:
        attrs[MENSHEN_CLIENT_ID] = client_id
    if policy_version is not None:
        attrs[MENSHEN_POLICY_VERSION] = policy_version
    return attrs


def response_attributes(
    attrs: Attributes,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    finish_reasons: Sequence[str] = (),
    ttft_s: float | None = None,
    response_model: str | None = None,
    response_id: str | None = None,
) -> Attributes:
    """``attrs`` with the GenAI response attributes added; one ``set_attributes`` call sets them all."""
    if input_tokens is not None:
        attrs[GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
    if output_tokens is not None:
        attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    if finish_reasons:
        attrs[GEN_AI_RESPONSE_FINISH_REASONS] = tuple(finish_reasons)
    if ttft_s is not None:
        attrs[GEN_AI_TTFT] = ttft_s
    if response_model is not None:
        attrs[GEN_AI_RESPONSE_MODEL] = response_model
    if response_id is not None:
        attrs[GEN_AI_RESPONSE_ID] = response_id
    return attrs


# --- the request's spans -------------------------------------------------------------------------------


def open_request(
    tracer: Tracer,
    name: str,
    carrier: Mapping[str, str] | None = None,
    attributes: Attributes | None = None,
) -> tuple[Span, Token[otel_context.Context]]:
    """Start a request's SERVER span, continuing the caller's trace in ``carrier`` (the configured
    propagators read it), and make it current with ``tracer``; ``close_request`` undoes it."""
    parent = extract(carrier) if carrier else None
    span = tracer.start_span(name, parent, SpanKind.SERVER, attributes)
    ctx = trace.set_span_in_context(span, parent)
    ctx = otel_context.set_value(_SERVER_KEY, span, otel_context.set_value(_TRACER_KEY, tracer, ctx))
    return span, otel_context.attach(ctx)


def close_request(token: Token[otel_context.Context]) -> None:
    """Leave the request's context (the caller ends the span once it has set its last attributes)."""
    otel_context.detach(token)


def _child(name: str, kind: SpanKind, attributes: Attributes | None) -> Span | None:
    """A child of the current span, or ``None`` when there is no recording request span to be a child of."""
    if not trace.get_current_span().is_recording():
        return None
    tracer = otel_context.get_value(_TRACER_KEY)
    if not isinstance(tracer, Tracer):
        return None  # a span from some other tracer, outside a request
    return tracer.start_span(name, kind=kind, attributes=attributes)


class phase:
    """A child span of the current span, current for the ``with`` block and ended at its exit.

    An escaping exception sets ERROR status with the exception's type name only (its message could quote
    the request). A class rather than a ``@contextmanager`` generator: it runs several times per request.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_span", "_token")

    def __init__(
        self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes | None = None
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._span: Span | None = None
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        span = self._span = _child(self._name, self._kind, self._attributes)
        if span is None:
            return INVALID_SPAN
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        span, token = self._span, self._token
        if span is None or token is None:
            return
        otel_context.detach(token)
        if exc_type is not None:
            span.set_attribute("error.type", exc_type.__qualname__)
            set_error(span, exc_type.__qualname__)
        span.end()


def start_span(name: str) -> Span:
    """A child span of the current span, *not* made current; the caller ends it."""
    return _child(name, SpanKind.INTERNAL, None) or INVALID_SPAN


def _server_attributes(server_url: str) -> tuple[tuple[str, str | int], ...]:
    url = urlsplit(server_url)
    attrs: list[tuple[str, str | int]] = []
    if url.hostname:
        attrs.append((SERVER_ADDRESS, url.hostname))
    if url.port:
        attrs.append((SERVER_PORT, url.port))
    return tuple(attrs)


def engine_span(operation: Operation, model: str, server_url: str | None = None) -> phase:
    """The client span of the upstream call, named ``"{operation} {model}"`` as semconv asks.

    Inject the trace context *inside* it, so that the engine's spans become its children.
    """
    if not trace.get_current_span().is_recording():
        return phase("")  # returns INVALID_SPAN at once: no attributes built for nothing
    attrs: Attributes = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_PROVIDER_NAME: "vllm",
        GEN_AI_REQUEST_MODEL: model,
    }
    if server_url:
        attrs.update(_server_attributes(server_url))
    return phase(f"{operation} {model}", SpanKind.CLIENT, attrs)


def inject_traceparent(headers: dict[str, str]) -> None:
    """Add the W3C ``traceparent`` (and ``tracestate``) of the current span to upstream ``headers``.

    An unsampled request still sends its ids, flagged not sampled, so the engine does not trace it either.
    """
    _W3C.inject(headers)


def current_server_span() -> Span:
    """The current request's SERVER span; ``INVALID_SPAN`` outside a traced request."""
    span = otel_context.get_value(_SERVER_KEY)
    return span if isinstance(span, Span) else INVALID_SPAN


def current_ids() -> tuple[int, int] | None:
    """(trace id, span id) of the current span, ``None`` when there is none."""
    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else None


def current_trace_id() -> str | None:
    """The 32-hex trace id of the current span, ``None`` when there is none."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def set_error(span: Span, description: str) -> None:
    """ERROR status with ``description``: a short error code, never text from a request."""
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, description))


def add_decision_event(span: Span, decision: Decision) -> None:
    """Record a guardrail or loop decision as a span event: rule, category, action, mode, offsets.

    ``decision.matched`` is never read. String ``detail`` values that are not short identifiers
    are replaced by their length and hash, in case a check put text there.
    """
    if not span.is_recording():
        return
    attrs: Attributes = {
        "menshen.rule": decision.rule,
        "menshen.category": decision.category,
        "menshen.action": decision.action,
        "menshen.mode": decision.mode,
        "menshen.where": decision.where,
        "menshen.offset.start": decision.start,
        "menshen.offset.end": decision.end,
    }
    for key, value in decision.detail:
        if isinstance(value, str) and not _SAFE_DETAIL.match(value):
            value = redact(value)
        attrs[f"menshen.detail.{key}"] = value
    span.add_event(DECISION_EVENT, attrs)


class Telemetry:
    """The app's tracer provider (``None``: tracing off) and the server-span middleware built on it."""

    __slots__ = ("provider", "tracer")

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        # A no-op tracer when OTEL_SDK_DISABLED made the provider one: its spans never record.
        self.tracer = provider.get_tracer("menshen", __version__) if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @contextmanager
    def server_span(
        self, name: str, carrier: Mapping[str, str] | None = None, attributes: Attributes | None = None
    ) -> Iterator[Span]:
        """A request's trace outside HTTP (jobs, tests): its SERVER span, current for the block."""
        if self.tracer is None:
            yield INVALID_SPAN
            return
        span, token = open_request(self.tracer, name, carrier, attributes)
        try:
            yield span
        finally:
            close_request(token)
            span.end()

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        """Export what the batch processor holds (before the process may be killed)."""
        return self.provider.force_flush(timeout_ms) if self.provider is not None else True

    def shutdown(self) -> None:
        """Flush and stop the exporters (app shutdown)."""
        if self.provider is not None:
            self.provider.shutdown()


__all__ = [
    "DECISION_EVENT",
    "EXCLUDED_PATHS",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_ID",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TTFT",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "MENSHEN_CLIENT_ID",
    "MENSHEN_POLICY_VERSION",
    "MENSHEN_STREAM",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SPAN_ADMISSION",
    "SPAN_AUTH",
    "SPAN_INPUT_GUARD",
    "SPAN_STREAM",
    "Attributes",
    "Operation",
    "Telemetry",
    "add_decision_event",
    "close_request",
    "current_ids",
    "current_server_span",
    "current_trace_id",
    "engine_span",
    "inject_traceparent",
    "open_request",
    "phase",
    "request_attributes",
    "response_attributes",
    "set_error",
    "start_span",
]

"""Spans of a request: names, GenAI semantic-convention attributes, decision events, propagation.

``Telemetry`` holds the request tracer (none when tracing is off; see ``request_trace`` for how spans
are recorded) and builds the Litestar OpenTelemetry plugin for server spans. Attribute helpers return
at once on a span that does not record, so a request costs almost nothing with tracing off. Nothing here is called per chunk:
time to first token and usage are set once, at the end of the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from gateway import __version__
from gateway.telemetry.request_trace import (
    NOOP_SPAN,
    AttributeValue,
    RequestTracer,
    RequestTracerProvider,
    SpanRecord,
    activate,
    current_ids,
    deactivate,
    inject_traceparent,
    phase,
)
from gateway.telemetry.scrub import redact

if TYPE_CHECKING:
    from litestar.middleware.base import DefineMiddleware

    from gateway.guardrails.pipeline import Decision

Operation = Literal["chat", "text_completion"]

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


@lru_cache(maxsize=8)
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

    Inject the trace context *inside* it, so the engine's spans become its children.
    """
    attrs: Attributes = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_PROVIDER_NAME: "vllm",
        GEN_AI_REQUEST_MODEL: model,
    }
    if server_url:
        attrs.update(_server_attributes(server_url))
    return phase(f"{operation} {model}", SpanKind.CLIENT, attrs)


def add_decision_event(span: SpanRecord, decision: Decision) -> None:
    """Record a guardrail or loop decision as a span event: rule, category, action, mode, offsets.

    ``decision.matched`` is never read. String ``detail`` values that are not short identifiers
    are replaced by their length and hash, in case a check put text there.
    """
    if not span.is_recording():
        return
    attrs: dict[str, str | int | float] = {
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
    """The app's request tracer and its Litestar plugin; built from ``setup_tracing()``'s result."""

    __slots__ = ("provider", "request_tracer")

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.request_tracer: RequestTracer | None = None
        if provider is not None:
            sdk_tracer = provider.get_tracer("menshen", __version__)
            if isinstance(sdk_tracer, SdkTracer):  # not when OTEL_SDK_DISABLED made it a no-op one
                scope = InstrumentationScope("menshen", __version__)
                routed = provider if isinstance(provider, RequestTracerProvider) else None
                self.request_tracer = RequestTracer(sdk_tracer, scope, routed)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def litestar_middleware(self) -> DefineMiddleware | None:
        """The server-span middleware of Litestar's OpenTelemetry plugin; ``None`` when tracing is off.

        Passed in the app's ``middleware`` list, Litestar wraps it in its ``OpenTelemetryPlugin`` around
        the whole app (the plugin's own ``middleware`` property ignores ``middleware_class``). Probes and
        ``/metrics`` are excluded.
        """
        if self.request_tracer is None:
            return None
        from gateway.telemetry.server_span import ServerSpanConfig

        config = ServerSpanConfig(
            request_tracer=self.request_tracer, untraced_paths=frozenset(EXCLUDED_PATHS)
        )
        return config.middleware

    @contextmanager
    def server_span(
        self, name: str, carrier: Mapping[str, str] | None = None, attributes: Attributes | None = None
    ) -> Iterator[SpanRecord]:
        """A request's trace outside HTTP (jobs, tests): its SERVER span, current for the block."""
        if self.request_tracer is None:
            yield NOOP_SPAN
            return
        request = self.request_tracer.start(name, SpanKind.SERVER, attributes or {}, carrier)
        token = activate(request)
        try:
            yield request.server
        finally:
            deactivate(token)
            request.finish()

    @staticmethod
    def phase(name: str) -> AbstractContextManager[SpanRecord]:
        """An internal child span of the current request: ``with telemetry.phase(SPAN_AUTH): ...``."""
        return phase(name)

    @staticmethod
    def engine_span(
        operation: Operation, model: str, server_url: str | None = None
    ) -> AbstractContextManager[SpanRecord]:
        """The client span of the upstream call (see the module function ``engine_span``)."""
        return engine_span(operation, model, server_url)

    @staticmethod
    def current_trace_id() -> str | None:
        ids = current_ids()
        return format(ids[0], "032x") if ids is not None else None

    def shutdown(self) -> None:
        """Flush and stop exporters (app shutdown)."""
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
    "engine_span",
    "inject_traceparent",
    "request_attributes",
    "response_attributes",
]

"""The spans of one request, recorded cheaply and handed to the span processors when it ends.

opentelemetry-sdk's own ``Span`` takes a lock, validates every attribute, builds bounded collections
and attaches a context on start; six of them per request cost more CPU than the rest of a short
request. A span here is a slotted record with two timestamps and a plain dict. The provider's sampler
decides once per request (its children follow it, as ``ParentBased`` would have them), its id
generator makes the ids and its resource is attached.

When the server span ends, a sampled request goes to the provider's span processors:

* a ``RequestSpanProcessor`` (the gateway's batch OTLP export) takes the finished ``RequestTrace``
  as it is, one hand-over per request; its exporter encodes the records straight to OTLP;
* any other processor (console, in-memory in tests) gets each span as an SDK ``ReadableSpan``
  through ``on_end``, children first and the server span last. No SDK processor does anything in
  ``on_start`` for finished spans, so that is not called.

The processors are read from a ``RequestTracerProvider`` (the SDK's provider keeps its list private);
with a plain ``TracerProvider`` every processor gets ``ReadableSpan``s.

The current request is found through one context variable, so logs, the audit trail and the
``traceparent`` sent to the engine name the span that is open at the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from random import getrandbits
from time import time_ns
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, Sampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

AttributeValue = str | int | float | bool | tuple[str, ...] | list[str]
EventAttributes = dict[str, str | int | float]
_W3C: Final = TraceContextTextMapPropagator()
_UNSET: Final = Status(StatusCode.UNSET)
_NO_PARENT: Final = Context()
_TRACE_ID_LIMIT: Final = TraceIdRatioBased.TRACE_ID_LIMIT
# Trace flags by [sampled][random trace id].
_FLAGS: Final = tuple(
    tuple(
        TraceFlags((TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0))
        for random in (False, True)
    )
    for sampled in (False, True)
)


class SpanRecord:
    """One span of a request: name, ids, times, attributes, events and an error status."""

    __slots__ = (
        "attributes",
        "end_time",
        "error",
        "events",
        "kind",
        "name",
        "parent_id",
        "span_id",
        "start_time",
    )

    def __init__(
        self,
        name: str,
        span_id: int,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> None:
        self.name = name
        self.span_id = span_id
        self.parent_id = 0  # 0: the server span, whose parent is the caller's (if any)
        self.kind = kind
        self.attributes: dict[str, AttributeValue] = attributes if attributes is not None else {}
        self.events: list[tuple[str, int, EventAttributes]] | None = None  # most spans have none
        self.error: str | None = None
        self.start_time = time_ns()
        self.end_time = 0

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self.attributes.update(attributes)

    def add_event(self, name: str, attributes: EventAttributes) -> None:
        event = (name, time_ns(), attributes)
        if self.events is None:
            self.events = [event]
        else:
            self.events.append(event)

    def set_error(self, description: str = "") -> None:
        """Status ERROR with ``description`` (an error code, never text from a request)."""
        self.error = description

    def end(self) -> None:
        if not self.end_time:
            self.end_time = time_ns()


class _NoopSpan(SpanRecord):
    """What a request that is not traced (or not sampled) records into: nothing."""

    __slots__ = ()

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        pass

    def add_event(self, name: str, attributes: EventAttributes) -> None:
        pass

    def set_error(self, description: str = "") -> None:
        pass

    def end(self) -> None:
        pass


NOOP_SPAN: Final[SpanRecord] = _NoopSpan("", 0)


class RequestTrace:
    """The server span of a request and its children; ``current`` is the span open right now.

    A request that is not sampled still has ids (logs and the engine's ``traceparent`` name them) but
    its spans are ``_NoopSpan``s and nothing is exported.
    """

    __slots__ = (
        "_tracer",
        "children",
        "current",
        "flags",
        "parent",
        "sampled",
        "server",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        tracer: RequestTracer,
        trace_id: int,
        server: SpanRecord,
        parent: SpanContext | None,
        flags: TraceFlags,
        trace_state: TraceState | None,
    ) -> None:
        self._tracer = tracer
        self.trace_id = trace_id
        self.server = server
        self.parent = parent
        self.flags = flags
        self.sampled = bool(flags & TraceFlags.SAMPLED)
        self.trace_state = trace_state
        self.children: list[SpanRecord] = []
        self.current = server

    def child(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> SpanRecord:
        """A child of the current span, started now."""
        tracer = self._tracer
        # RandomIdGenerator's draw, without its call (a zero id, 2**-64 likely, is drawn again by it).
        span_id = (tracer.random_ids and getrandbits(64)) or tracer.new_span_id()
        if not self.sampled:
            return _NoopSpan(name, span_id, kind)
        span = SpanRecord(name, span_id, kind, attributes)
        span.parent_id = self.current.span_id
        self.children.append(span)
        return span

    def traceparent(self) -> str:
        """W3C ``traceparent`` naming the current span."""
        return f"00-{self.trace_id:032x}-{self.current.span_id:016x}-{self.flags:02x}"

    @property
    def resource(self) -> Resource:
        return self._tracer.resource

    @property
    def scope(self) -> InstrumentationScope:
        return self._tracer.scope

    def finish(self) -> None:
        """End the server span (and any child left open) and hand a sampled request to the processors."""
        self.server.end()
        if self.sampled:
            for child in self.children:
                if not child.end_time:
                    child.end()
            self._tracer.export(self)

    def readable_spans(self) -> Iterator[ReadableSpan]:
        """The finished spans as SDK ``ReadableSpan``s: children in start order, then the server span."""
        tracer = self._tracer
        flags, state = self.flags, self.trace_state
        server = self.server
        context = SpanContext(self.trace_id, server.span_id, False, flags, state)
        contexts = {server.span_id: context}
        for child in self.children:  # in start order: a parent comes before its children
            own = contexts[child.span_id] = SpanContext(self.trace_id, child.span_id, False, flags, state)
            yield tracer.readable(child, own, contexts[child.parent_id])
        yield tracer.readable(server, context, self.parent)  # last, as it ended last


class RequestSpanProcessor(SpanProcessor):
    """A span processor that takes a sampled request's spans in one call, as records."""

    def on_request_end(self, request: RequestTrace) -> None:
        """``request`` has finished; its spans are not changed after this call."""
        raise NotImplementedError


class RequestTracerProvider(TracerProvider):
    """The SDK's tracer provider, keeping the list of its span processors where ``RequestTracer`` can read it.

    ``root_sampler``: when the provider's sampler is ``ParentBased(root_sampler)``, requests that come
    without a caller's context are sampled by the root directly, as ``ParentBased`` would delegate them,
    without its lookups of a parent that is not there.
    """

    span_processors: tuple[SpanProcessor, ...] = ()

    def __init__(self, *, root_sampler: Sampler | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root_sampler = root_sampler

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.span_processors += (span_processor,)


def _root_bound(sampler: Sampler) -> int | None:
    """For the SDK's own root samplers, which add no attributes and no trace state, the bound that a new
    trace id's low 64 bits are sampled below (``TraceIdRatioBased``'s test), so that a request is decided
    without a call (``should_sample`` builds a result object and looks up the current context twice);
    ``None`` for any other sampler, which is then asked."""
    if sampler is ALWAYS_ON:
        return TraceIdRatioBased.TRACE_ID_LIMIT + 1
    if sampler is ALWAYS_OFF:
        return 0
    if type(sampler) is TraceIdRatioBased:
        return sampler.bound
    return None


class RequestTracer:
    """Makes ``RequestTrace``s with an SDK tracer's sampler, ids, resource and span processors.

    ``provider`` is the tracer's provider when it is a ``RequestTracerProvider``: its
    ``RequestSpanProcessor``s then take whole requests.
    """

    __slots__ = (
        "_ids",
        "_processor",
        "_provider",
        "_random_trace_ids",
        "_root_bound",
        "_root_sampler",
        "_routes",
        "_routes_for",
        "_sampler",
        "new_span_id",
        "random_ids",
        "resource",
        "scope",
    )

    def __init__(
        self, tracer: SdkTracer, scope: InstrumentationScope, provider: RequestTracerProvider | None = None
    ) -> None:
        self._sampler = tracer.sampler
        root = provider.root_sampler if provider is not None else None
        self._root_sampler = root if root is not None else tracer.sampler
        self._ids = tracer.id_generator
        self.resource = tracer.resource
        self._processor = tracer.span_processor
        self._provider = provider
        self._routes_for: tuple[SpanProcessor, ...] | None = None
        self._routes: tuple[tuple[RequestSpanProcessor, ...], tuple[SpanProcessor, ...]] = ((), ())
        self.scope = scope
        self.new_span_id: Callable[[], int] = self._ids.generate_span_id
        self.random_ids = type(self._ids) is RandomIdGenerator
        self._random_trace_ids = self._ids.is_trace_id_random()  # a property of the generator
        self._root_bound = _root_bound(self._root_sampler)

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        carrier: Mapping[str, str] | None = None,
    ) -> RequestTrace:
        """The trace of a new request, continuing the caller's W3C context in ``carrier`` if valid."""
        parent: SpanContext | None = None
        if carrier:
            parent_context = _W3C.extract(carrier)
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                parent = None
        # The request's parent is the caller's context or nothing: never a span current in this thread.
        trace_state: TraceState | None = None
        if parent is None:
            # RandomIdGenerator's draw without its call, as for span ids (RequestTrace.child).
            trace_id = (self.random_ids and getrandbits(128)) or self._ids.generate_trace_id()
            random_id = self._random_trace_ids
            bound = self._root_bound
            sampled = trace_id & _TRACE_ID_LIMIT < bound if bound is not None else None
            if sampled is None:
                result = self._root_sampler.should_sample(_NO_PARENT, trace_id, name, kind, attributes)
        else:
            trace_id, random_id = parent.trace_id, parent.trace_flags.random_trace_id
            sampled = None
            result = self._sampler.should_sample(parent_context, trace_id, name, kind, attributes)
        if sampled is None:
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            trace_state = result.trace_state
            if sampled and result.attributes:
                attributes.update(result.attributes)
        span_id = (self.random_ids and getrandbits(64)) or self.new_span_id()
        server = SpanRecord(name, span_id, kind, attributes) if sampled else _NoopSpan(name, span_id, kind)
        flags = _FLAGS[sampled][bool(random_id)]
        return RequestTrace(self, trace_id, server, parent, flags, trace_state)

    def export(self, request: RequestTrace) -> None:
        """Hand a finished, sampled request to the span processors."""
        if self._provider is None:
            on_end = self._processor.on_end
            for span in request.readable_spans():
                on_end(span)
            return
        processors = self._provider.span_processors
        if processors is not self._routes_for:  # the provider's tuple is replaced when one is added
            self._routes = (
                tuple(p for p in processors if isinstance(p, RequestSpanProcessor)),
                tuple(p for p in processors if not isinstance(p, RequestSpanProcessor)),
            )
            self._routes_for = processors
        whole, per_span = self._routes
        for processor in whole:
            processor.on_request_end(request)
        if per_span:
            for span in request.readable_spans():
                for plain in per_span:
                    plain.on_end(span)

    def readable(self, span: SpanRecord, context: SpanContext, parent: SpanContext | None) -> ReadableSpan:
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=span.attributes,
            events=[Event(name, attrs, at) for name, at, attrs in span.events] if span.events else (),
            kind=span.kind,
            status=_UNSET if span.error is None else Status(StatusCode.ERROR, span.error or None),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=self.scope,
        )


_CURRENT: ContextVar[RequestTrace | None] = ContextVar("menshen.request_trace", default=None)


def current_trace() -> RequestTrace | None:
    return _CURRENT.get()


def activate(request: RequestTrace | None) -> object:
    """Make ``request`` the current trace; returns the token for ``deactivate``."""
    return _CURRENT.set(request)


def deactivate(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def current_span() -> SpanRecord:
    request = _CURRENT.get()
    return request.current if request is not None else NOOP_SPAN


def start_span(
    name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, AttributeValue] | None = None
) -> SpanRecord:
    """A child span of the current request, ended by the caller (``NOOP_SPAN`` outside a trace)."""
    request = _CURRENT.get()
    return request.child(name, kind, attributes) if request is not None else NOOP_SPAN


class phase:
    """A child span for the ``with`` block, current while it runs; an escaping exception marks it ERROR.

    A class rather than a ``@contextmanager`` generator: it runs several times per request.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_outer", "_request", "_span")

    def __init__(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes

    def __enter__(self) -> SpanRecord:
        request = self._request = _CURRENT.get()
        if request is None:
            return NOOP_SPAN
        span = self._span = request.child(self._name, self._kind, self._attributes)
        self._outer = request.current
        request.current = span
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        request = self._request
        if request is None:
            return
        span = self._span
        if exc_type is not None:
            span.set_error(exc_type.__qualname__)
        request.current = self._outer
        if not span.end_time:  # SpanRecord.end, inline: no-op spans of unsampled requests are never read
            span.end_time = time_ns()


def inject_traceparent(headers: dict[str, str]) -> None:
    """Add W3C ``traceparent`` (and ``tracestate``) of the current span to upstream ``headers``.

    Only the W3C trace context is sent: baggage set by a client never reaches the engine.
    """
    request = _CURRENT.get()
    if request is None:
        return
    headers["traceparent"] = request.traceparent()
    if request.trace_state:
        headers["tracestate"] = request.trace_state.to_header()


def current_ids() -> tuple[int, int] | None:
    """(trace id, span id) of the span open now: the request's own, else OpenTelemetry's current span."""
    request = _CURRENT.get()
    if request is not None:
        return request.trace_id, request.current.span_id
    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else None


__all__ = [
    "NOOP_SPAN",
    "AttributeValue",
    "RequestSpanProcessor",
    "RequestTrace",
    "RequestTracer",
    "RequestTracerProvider",
    "SpanRecord",
    "activate",
    "current_ids",
    "current_span",
    "current_trace",
    "deactivate",
    "inject_traceparent",
    "phase",
    "start_span",
]

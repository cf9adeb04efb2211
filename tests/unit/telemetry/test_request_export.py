"""Whole requests to the OTLP exporters: encoded from their span records when they end, to the bytes the
SDK's encoder gives for the same spans as ``ReadableSpan``s, and routed beside per-span processors."""

from __future__ import annotations

import itertools
import logging
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

from gateway.telemetry import Telemetry
from gateway.telemetry.otlp import EncodedRequest, encode_request, encode_spans, span_count
from gateway.telemetry.otlp_exporters import RequestBatchSpanProcessor
from gateway.telemetry.request_trace import RequestTrace, RequestTracer, RequestTracerProvider, phase

from .test_otlp_encode import PLAIN_ATTRIBUTES, RESOURCES, exporter, one_span, receiver

NAMES = st.text(max_size=12) | st.sampled_from(["menshen.auth", "chat Qwen/Qwen3-8B", "请求"])
EVENTS = st.lists(
    st.tuples(NAMES, st.integers(1, 2**64 - 1), st.dictionaries(NAMES, st.text() | st.integers(0, 99))),
    max_size=2,
)
ERRORS = st.none() | st.sampled_from(["", "engine_error", "ValueError"])
CARRIERS = st.sampled_from(
    [
        None,
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "v=abc,w=1"},
    ]
)


class CountingIds(IdGenerator):
    """Ids from a counter, started where hypothesis says: the SDK's random ones would make it nondeterministic."""

    def __init__(self, start: int) -> None:
        self._next = itertools.count(start)

    def generate_span_id(self) -> int:
        return next(self._next) % 2**64 or 1

    def generate_trace_id(self) -> int:
        return next(self._next) * 0x9E3779B97F4A7C15 % 2**128 or 1


def request_tracer(provider: TracerProvider) -> RequestTracer:
    tracer = provider.get_tracer("menshen", "0.1.0")
    assert isinstance(tracer, SdkTracer)
    return RequestTracer(tracer, InstrumentationScope("menshen", "0.1.0"))


@st.composite
def requests(draw: st.DrawFn) -> RequestTrace:
    """A finished request: a server span and children nested at random, with attributes, events, errors."""
    ids = CountingIds(draw(st.integers(1, 2**64 - 1)))
    tracer = request_tracer(
        TracerProvider(id_generator=ids)
    )  # no processors: finish() hands the spans to nobody
    request = tracer.start(draw(NAMES), SpanKind.SERVER, draw(PLAIN_ATTRIBUTES), draw(CARRIERS))
    spans = [request.server]
    for _ in range(draw(st.integers(0, 5))):
        request.current = draw(st.sampled_from(spans))  # the child's parent
        child = request.child(draw(NAMES), draw(st.sampled_from(SpanKind)), draw(PLAIN_ATTRIBUTES))
        spans.append(child)
    for span in spans:
        events = draw(EVENTS)
        span.events = [(name, at, attributes) for name, at, attributes in events] or None
        error = draw(ERRORS)
        if error is not None:
            span.set_error(error)
    request.current = request.server
    request.finish()
    return request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, len(RESOURCES) - 1), max_size=3))
def test_encoded_requests_are_what_the_sdk_encodes(batch: list[RequestTrace], others: list[int]) -> None:
    """Requests and other spans mixed in one batch: grouped and ordered as the SDK's encoder would."""
    items: list[ReadableSpan | EncodedRequest] = []
    flat: list[ReadableSpan] = []
    for n, request in enumerate(batch):
        items.append(encode_request(request))
        flat += request.readable_spans()
        if n < len(others):
            span = one_span({"k": n}, resource=RESOURCES[others[n]])
            items.append(span)
            flat.append(span)
    ours = encode_spans(items)
    expected = sdk_encode_spans(flat)
    assert ExportTraceServiceRequest.FromString(ours) == expected
    assert len(ours) == expected.ByteSize()
    assert span_count(items) == len(flat)


def served(telemetry: Telemetry, n: int) -> None:
    """``n`` requests with the gateway's span shape."""
    for _ in range(n):
        with telemetry.server_span("POST /v1/chat/completions", attributes={"http.route": "/x"}):
            with phase("menshen.auth"):
                pass
            with phase("chat m", SpanKind.CLIENT, {"gen_ai.provider.name": "vllm"}):
                pass


@pytest.mark.usefixtures("no_proxy")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_go_whole_to_the_batch_exporter_and_as_spans_to_the_others(protocol: str) -> None:
    """A per-span processor added after the first request gets the later ones' spans; the OTLP export
    carries every request, with the bytes the SDK encodes for the spans the other processor got."""
    with receiver(protocol) as (endpoint, received):
        provider = RequestTracerProvider()
        provider.add_span_processor(RequestBatchSpanProcessor(exporter(protocol, endpoint)))  # type: ignore[arg-type]
        telemetry = Telemetry(provider)
        served(telemetry, 1)
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        served(telemetry, 2)
        provider.force_flush()
        provider.shutdown()
    exported = received.all_spans()
    assert len(exported) == 9  # 3 requests x (server, auth, engine)
    later = memory.get_finished_spans()
    assert [s.name for s in later] == ["menshen.auth", "chat m", "POST /v1/chat/completions"] * 2
    expected = sdk_encode_spans(later).resource_spans[0].scope_spans[0].spans
    assert exported[3:] == list(expected)
    assert len({s.trace_id for s in exported}) == 3


def test_a_request_that_cannot_be_encoded_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """It ends like any other: no exception reaches the request, and the next request is exported."""
    sent: list[list[object]] = []

    class Keep(InMemorySpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            sent.append(list(spans))
            return super().export([])

    provider = RequestTracerProvider()
    provider.add_span_processor(RequestBatchSpanProcessor(Keep()))  # type: ignore[arg-type]
    telemetry = Telemetry(provider)
    with caplog.at_level(logging.ERROR), telemetry.server_span("bad") as server:
        server.kind = "not a SpanKind"  # type: ignore[assignment]
    served(telemetry, 1)
    provider.force_flush()
    assert "Failed to encode the spans of a request" in caplog.text
    assert [span_count(batch) for batch in sent] == [3]  # type: ignore[arg-type]
    provider.shutdown()


def test_the_request_that_fills_a_batch_wakes_the_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests are queued without waking the export thread until one fills OTEL_BSP_MAX_EXPORT_BATCH_SIZE;
    after shutdown nothing more is queued."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # never by the timer in this test
    sent: list[int] = []
    exported = threading.Event()

    class Count(InMemorySpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            sent.append(span_count(spans))
            exported.set()
            return super().export([])

    provider = RequestTracerProvider()
    processor = RequestBatchSpanProcessor(Count())  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    telemetry = Telemetry(provider)
    served(telemetry, 2)
    assert not exported.wait(0.3)  # two requests: below a batch, the thread sleeps on
    served(telemetry, 1)
    assert exported.wait(10)
    assert sent == [9]  # one batch: 3 requests x 3 spans
    served(telemetry, 1)
    provider.shutdown()  # exports what is queued
    assert sent == [9, 3]
    served(telemetry, 1)
    assert len(processor._batch_processor._queue) == 0

"""Request traces: what reaches the span processors matches what the SDK's own tracer would have made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, StatusCode, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.telemetry import Telemetry
from gateway.telemetry.request_trace import (
    NOOP_SPAN,
    RequestTracerProvider,
    current_ids,
    current_span,
    current_trace,
    inject_traceparent,
    phase,
    start_span,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CARRIER = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=abc"}


def _provider(sampler: Sampler = ALWAYS_ON) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _ours(provider: TracerProvider) -> None:
    t = Telemetry(provider)
    with t.server_span("POST /v1/chat/completions", CARRIER, {"http.request.method": "POST"}) as server:
        with phase("menshen.auth"), phase("menshen.admission") as admission:
            admission.set_attribute("menshen.reserve_tokens", 300)
        with pytest.raises(ValueError, match="blocked"), phase("menshen.input_guard"):
            raise ValueError("blocked")
        with phase("chat m", SpanKind.CLIENT, {"gen_ai.provider.name": "vllm"}):
            pass
        stream = start_span("menshen.stream")
        stream.add_event("menshen.decision", {"menshen.rule": "r", "menshen.offset.start": 3})
        stream.set_error("engine_error")
        stream.end()
        server.set_attributes({"http.response.status_code": 200, "gen_ai.response.finish_reasons": ["stop"]})


def _sdk(provider: TracerProvider) -> None:
    """The same request through the SDK's own tracer, as the gateway did before.

    One deliberate difference: the SDK would add an ``exception`` event with the message and stack
    trace, which can quote request text; a request trace records the exception's type only.
    """
    tracer = provider.get_tracer("menshen")
    ctx = TraceContextTextMapPropagator().extract(CARRIER)
    with tracer.start_as_current_span(
        "POST /v1/chat/completions", ctx, SpanKind.SERVER, {"http.request.method": "POST"}
    ) as server:
        with (
            tracer.start_as_current_span("menshen.auth"),
            tracer.start_as_current_span("menshen.admission") as admission,
        ):
            admission.set_attribute("menshen.reserve_tokens", 300)
        with (
            pytest.raises(ValueError, match="blocked"),
            tracer.start_as_current_span("menshen.input_guard", record_exception=False),
        ):
            raise ValueError("blocked")
        with tracer.start_as_current_span(
            "chat m", kind=SpanKind.CLIENT, attributes={"gen_ai.provider.name": "vllm"}
        ):
            pass
        stream = tracer.start_span("menshen.stream")
        stream.add_event("menshen.decision", {"menshen.rule": "r", "menshen.offset.start": 3})
        from opentelemetry.trace import Status

        stream.set_status(Status(StatusCode.ERROR, "engine_error"))
        stream.end()
        server.set_attributes({"http.response.status_code": 200, "gen_ai.response.finish_reasons": ["stop"]})


def _shape(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Everything but ids and times, with parents named, sorted by name."""
    names = {s.context.span_id: s.name for s in spans}
    out = []
    for s in spans:
        parent = s.parent
        out.append(
            (
                s.name,
                s.kind,
                names.get(parent.span_id, CLIENT_SPAN if parent and parent.is_remote else None)
                if parent
                else None,
                format(s.context.trace_id, "032x"),
                s.context.trace_flags,
                s.context.trace_state.to_header(),
                {
                    k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                    for k, v in (s.attributes or {}).items()
                },
                [(e.name, dict(e.attributes or {})) for e in s.events],
                s.status.status_code,
                s.status.description
                if s.status.status_code is StatusCode.ERROR and s.name == "menshen.stream"
                else None,
                s.resource.attributes == TracerProvider().resource.attributes,
            )
        )
    return sorted(out, key=lambda row: row[0])


def test_spans_match_what_the_sdk_tracer_makes() -> None:
    ours, ours_out = _provider()
    sdk, sdk_out = _provider()
    _ours(ours)
    _sdk(sdk)
    assert _shape(ours_out.get_finished_spans()) == _shape(sdk_out.get_finished_spans())
    spans = {s.name: s for s in ours_out.get_finished_spans()}
    assert spans["menshen.input_guard"].status.status_code is StatusCode.ERROR
    for span in spans.values():
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "menshen"
    server = spans["POST /v1/chat/completions"]
    assert server.start_time <= min(s.start_time for s in spans.values())  # type: ignore[type-var]
    assert server.end_time >= max(s.end_time for s in spans.values())  # type: ignore[type-var]
    assert ours_out.get_finished_spans()[-1] is server, "the server span is delivered last, as it ends last"


class _Tagging(Sampler):
    """Samples, adds an attribute and a tracestate entry, as a real sampler may."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampler.tag": "x"}, TraceState([("s", "1")]))

    def get_description(self) -> str:
        return "tagging"


def test_sampler_attributes_and_tracestate_are_kept_and_sent_upstream() -> None:
    provider, exporter = _provider(_Tagging())
    t = Telemetry(provider)
    upstream: dict[str, str] = {}
    with t.server_span("GET /v1/models"), phase("chat m", SpanKind.CLIENT):
        inject_traceparent(upstream)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert dict(spans["GET /v1/models"].attributes or {})["sampler.tag"] == "x"
    assert upstream["tracestate"] == "s=1"
    assert upstream["traceparent"].split("-")[2] == format(spans["chat m"].context.span_id, "016x")


def test_the_root_sampler_decides_alone_only_for_requests_without_a_caller() -> None:
    """A RequestTracerProvider samples a new trace by its root sampler, as ParentBased would delegate it,
    and a caller's trace by the caller's sampled flag."""
    ratio = TraceIdRatioBased(0.5)
    provider = RequestTracerProvider(root_sampler=ratio, sampler=ParentBased(ratio))
    t = Telemetry(provider)
    sampled: list[bool] = []
    for _ in range(200):
        with t.server_span("GET /x"):
            request = current_trace()
            assert request is not None
            expected = ratio.should_sample(None, request.trace_id, "GET /x").decision
            assert request.sampled is (expected is Decision.RECORD_AND_SAMPLE)
            sampled.append(request.sampled)
    assert 50 < sum(sampled) < 150  # both decisions were taken
    for root, expected_sampled in ((ALWAYS_ON, True), (ALWAYS_OFF, False)):
        with Telemetry(RequestTracerProvider(root_sampler=root, sampler=root)).server_span("GET /x"):
            request = current_trace()
            assert request is not None
            assert request.sampled is expected_sampled
    never = RequestTracerProvider(root_sampler=ALWAYS_OFF, sampler=ParentBased(ALWAYS_OFF))
    for flags, expected_sampled in (("01", True), ("00", False)):
        carrier = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}"}
        with Telemetry(never).server_span("GET /x", carrier):
            request = current_trace()
            assert request is not None
            assert request.sampled is expected_sampled
            assert format(request.trace_id, "032x") == CLIENT_TRACE


@pytest.mark.parametrize(
    "traceparent",
    ["garbage", f"00-{'0' * 32}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{'0' * 16}-01", ""],
)
def test_an_invalid_caller_context_starts_a_new_trace(traceparent: str) -> None:
    provider, exporter = _provider()
    with Telemetry(provider).server_span("GET /x", {"traceparent": traceparent}):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != CLIENT_TRACE
    assert span.context.trace_id != 0


def test_random_trace_id_flag_follows_the_sdk() -> None:
    provider, exporter = _provider()
    upstream: dict[str, str] = {}
    with Telemetry(provider).server_span("GET /x"):
        inject_traceparent(upstream)
    (span,) = exporter.get_finished_spans()
    sdk_provider, sdk_exporter = _provider()
    with sdk_provider.get_tracer("t").start_as_current_span("GET /x"):
        pass
    (sdk_span,) = sdk_exporter.get_finished_spans()
    assert span.context.trace_flags == sdk_span.context.trace_flags
    assert upstream["traceparent"].endswith(f"-{span.context.trace_flags:02x}")


def test_outside_a_request_everything_is_a_no_op() -> None:
    assert current_span() is NOOP_SPAN
    assert start_span("x") is NOOP_SPAN
    with phase("y") as span:
        assert span is NOOP_SPAN
        span.set_attribute("k", "v")
        span.add_event("e", {})
        span.set_error("z")
    assert NOOP_SPAN.attributes == {} and not NOOP_SPAN.events and NOOP_SPAN.error is None
    headers: dict[str, str] = {}
    inject_traceparent(headers)
    assert headers == {}


def test_log_ids_name_the_open_span_and_a_child_left_open_is_ended() -> None:
    provider, exporter = _provider()
    t = Telemetry(provider)
    with t.server_span("GET /x"):
        outer = current_ids()
        with phase("menshen.auth"):
            inner = current_ids()
        start_span("menshen.stream")  # never ended by its caller
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert outer == (spans["GET /x"].context.trace_id, spans["GET /x"].context.span_id)
    assert inner == (spans["GET /x"].context.trace_id, spans["menshen.auth"].context.span_id)
    assert spans["menshen.stream"].end_time is not None
    assert current_ids() is None

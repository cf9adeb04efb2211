from __future__ import annotations

from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

from gateway.guardrails.pipeline import Decision
from gateway.telemetry import (
    DECISION_EVENT,
    SPAN_ADMISSION,
    SPAN_AUTH,
    SPAN_INPUT_GUARD,
    SPAN_STREAM,
    Telemetry,
    add_decision_event,
    current_ids,
    current_server_span,
    current_trace_id,
    engine_span,
    inject_traceparent,
    phase,
    request_attributes,
    response_attributes,
    set_error,
    start_span,
)
from gateway.telemetry.server_span import server_span_middleware
from tests.support.telemetry import Traced

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MATCHED = "forbidden phrase 禁词"


def _request(t: Telemetry) -> dict[str, str]:
    """The span tree of one blocked chat request, built the way the request flow does."""
    upstream: dict[str, str] = {}
    carrier = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    with t.server_span("POST /v1/chat/completions", carrier) as server:
        attrs = request_attributes(
            operation="chat",
            model="qwen3-8b",
            max_tokens=256,
            temperature=0.7,
            stream=True,
            client_id="team-a",
            policy_version="2024-06-01.3",
        )
        with phase(SPAN_AUTH), phase(SPAN_ADMISSION), phase(SPAN_INPUT_GUARD):
            pass
        with engine_span("chat", "qwen3-8b"):
            inject_traceparent(upstream)
        with phase(SPAN_STREAM) as stream:
            add_decision_event(
                stream,
                Decision(
                    rule="words.secret-project",
                    category="confidential",
                    action="block",
                    mode="enforce",
                    where="output",
                    start=120,
                    end=126,
                    matched=MATCHED,
                    detail=(("list", "projects"), ("score", 0.9), ("note", MATCHED)),
                ),
            )
        server.set_attributes(
            response_attributes(
                attrs, input_tokens=31, output_tokens=42, finish_reasons=["content_filter"], ttft_s=0.182
            )
        )
    return upstream


def test_span_tree_continues_the_client_trace(traced: Traced) -> None:
    _request(traced.telemetry)
    spans = traced.spans()
    assert set(spans) == {
        "POST /v1/chat/completions",
        SPAN_AUTH,
        SPAN_ADMISSION,
        SPAN_INPUT_GUARD,
        "chat qwen3-8b",
        SPAN_STREAM,
    }
    server = spans["POST /v1/chat/completions"]
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {CLIENT_TRACE}
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CLIENT_SPAN
    for name in (SPAN_AUTH, "chat qwen3-8b", SPAN_STREAM):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == server.context.span_id
    # The phases nest as written: admission inside auth, input guard inside admission.
    assert spans[SPAN_INPUT_GUARD].parent.span_id == spans[SPAN_ADMISSION].context.span_id  # type: ignore[union-attr]
    assert spans["chat qwen3-8b"].kind is SpanKind.CLIENT


def test_genai_attributes(traced: Traced) -> None:
    _request(traced.telemetry)
    attrs = dict(traced.spans()["POST /v1/chat/completions"].attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "qwen3-8b"
    assert attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.request.temperature"] == 0.7
    assert attrs["gen_ai.usage.input_tokens"] == 31
    assert attrs["gen_ai.usage.output_tokens"] == 42
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("content_filter",)  # type: ignore[arg-type]
    assert attrs["gen_ai.server.time_to_first_token"] == 0.182
    assert attrs["menshen.client_id"] == "team-a"
    assert attrs["menshen.policy.version"] == "2024-06-01.3"


def test_traceparent_sent_upstream_names_the_engine_span(traced: Traced) -> None:
    upstream = _request(traced.telemetry)
    engine = traced.spans()["chat qwen3-8b"]
    version, trace_id, parent_id, flags = upstream["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert parent_id == format(engine.context.span_id, "016x")


def test_decision_event_carries_ids_and_offsets_never_the_text(traced: Traced) -> None:
    _request(traced.telemetry)
    stream = traced.spans()[SPAN_STREAM]
    (event,) = [e for e in stream.events if e.name == DECISION_EVENT]
    attrs = dict(event.attributes or {})
    assert attrs["menshen.rule"] == "words.secret-project"
    assert attrs["menshen.category"] == "confidential"
    assert (attrs["menshen.action"], attrs["menshen.mode"], attrs["menshen.where"]) == (
        "block",
        "enforce",
        "output",
    )
    assert (attrs["menshen.offset.start"], attrs["menshen.offset.end"]) == (120, 126)
    assert attrs["menshen.detail.list"] == "projects"
    assert attrs["menshen.detail.score"] == 0.9
    assert str(attrs["menshen.detail.note"]).startswith("[REDACTED LENGTH=")
    for span in traced.exporter.get_finished_spans():
        dumped = span.to_json()
        assert MATCHED not in dumped
        assert "forbidden phrase" not in dumped


def test_disabled_telemetry_is_a_silent_no_op() -> None:
    t = Telemetry(None)
    assert t.enabled is False
    assert server_span_middleware(t) is None
    # Nothing is recorded and nothing is propagated: the engine sees no trace context.
    assert _request(t) == {}
    with phase("no parent"):
        fresh: dict[str, str] = {}
        inject_traceparent(fresh)
    assert fresh == {}
    assert current_trace_id() is None
    t.shutdown()


def test_current_trace_id_inside_a_span(traced: Traced) -> None:
    t = traced.telemetry
    assert current_trace_id() is None
    with t.server_span("job"):
        trace_id = current_trace_id()
        with phase("x"):
            assert current_trace_id() == trace_id
    (job, _) = sorted(traced.exporter.get_finished_spans(), key=lambda s: s.name)
    assert trace_id == format(job.context.trace_id, "032x")


def test_unsampled_request_propagates_ids_and_exports_nothing() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    t = Telemetry(provider)
    upstream: dict[str, str] = {}
    with t.server_span("POST /v1/chat/completions") as server, engine_span("chat", "m") as engine:
        assert not server.is_recording() and not engine.is_recording()
        inject_traceparent(upstream)
        trace_id = current_trace_id()
    version, sent_trace, parent_id, flags = upstream["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)
    assert int(flags, 16) & 1 == 0, "not sampled"
    assert int(parent_id, 16) != 0
    assert exporter.get_finished_spans() == ()
    # A sampled caller wins over the root sampler's "off" under ParentBased.
    sampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    with t.server_span("POST /v1/models", {"traceparent": sampled}) as server:
        assert server.is_recording()
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE


def test_helpers_outside_a_request_return_at_once() -> None:
    assert current_server_span() is INVALID_SPAN
    assert current_ids() is None
    with phase(SPAN_AUTH) as span:
        assert span is INVALID_SPAN
    stream = start_span(SPAN_STREAM)
    assert stream is INVALID_SPAN
    set_error(stream, "nothing")  # no-op on a non-recording span
    stream.end()


def test_server_span_is_found_from_nested_phases_and_start_span_is_not_current(traced: Traced) -> None:
    t = traced.telemetry
    with t.server_span("POST /v1/chat/completions") as server:
        assert current_server_span() is server
        with phase(SPAN_ADMISSION) as admission:
            assert current_server_span() is server
            stream = start_span(SPAN_STREAM)
            ids = current_ids()
            assert ids is not None and ids[1] == admission.get_span_context().span_id
            set_error(stream, "upstream_error")
            stream.end()
        try:
            with phase(SPAN_INPUT_GUARD):
                raise KeyError("the prompt text")
        except KeyError:
            pass
    spans = traced.spans()
    assert spans[SPAN_STREAM].parent.span_id == spans[SPAN_ADMISSION].context.span_id  # type: ignore[union-attr]
    assert spans[SPAN_STREAM].status.status_code is StatusCode.ERROR
    assert spans[SPAN_STREAM].status.description == "upstream_error"
    failed = spans[SPAN_INPUT_GUARD]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "KeyError"
    assert "the prompt text" not in failed.to_json(), "an exception's message is never recorded"
    assert current_server_span() is INVALID_SPAN

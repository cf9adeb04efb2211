"""Real OTLP export: spans built with the telemetry helpers reach a receiver started by the test.

The receivers decode the wire format with opentelemetry-proto, as a collector would. The trace id
that arrives must be the one in the ``traceparent`` the gateway sends upstream to the engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import TracerProvider

from gateway.guardrails.pipeline import Decision
from gateway.telemetry import (
    SPAN_STREAM,
    Telemetry,
    add_decision_event,
    engine_span,
    inject_traceparent,
    phase,
    request_attributes,
    response_attributes,
    setup_tracing,
)
from tests.support.otlp import Received, kv_dict, otlp_grpc_receiver, otlp_http_receiver

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
MATCHED = "the forbidden words"


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    with otlp_http_receiver() as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    with otlp_grpc_receiver() as receiver:
        yield receiver


def _one_request(telemetry: Telemetry) -> dict[str, str]:
    upstream: dict[str, str] = {}
    carrier = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    with telemetry.server_span("POST /v1/chat/completions", carrier) as s:
        attrs = request_attributes(operation="chat", model="qwen3-8b", max_tokens=64, client_id="team-a")
        with engine_span("chat", "qwen3-8b"):
            inject_traceparent(upstream)
        with phase(SPAN_STREAM) as stream:
            add_decision_event(
                stream, Decision("words.x", "secret", "block", "enforce", "output", 3, 22, matched=MATCHED)
            )
        s.set_attributes(
            response_attributes(
                attrs, input_tokens=9, output_tokens=5, finish_reasons=["content_filter"], ttft_s=0.05
            )
        )
    return upstream


def _check(received: Received, upstream: dict[str, str]) -> None:
    assert received.arrived.wait(10), "no export arrived"
    spans = received.spans()
    assert set(spans) == {"POST /v1/chat/completions", "chat qwen3-8b", SPAN_STREAM}
    _, sent_trace, sent_parent, _ = upstream["traceparent"].split("-")
    assert sent_trace == CLIENT_TRACE
    for span, resource in spans.values():
        assert span.trace_id.hex() == sent_trace
        assert resource["service.name"] == "menshen-otlp-test"
    engine, _ = spans["chat qwen3-8b"]
    assert engine.span_id.hex() == sent_parent
    assert engine.kind == ProtoSpan.SPAN_KIND_CLIENT
    server, _ = spans["POST /v1/chat/completions"]
    assert server.parent_span_id.hex() == CLIENT_SPAN
    attrs = kv_dict(server.attributes)
    assert attrs["gen_ai.request.model"] == "qwen3-8b"
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.response.finish_reasons"] == ["content_filter"]
    stream, _ = spans[SPAN_STREAM]
    (event,) = stream.events
    assert kv_dict(event.attributes)["menshen.rule"] == "words.x"
    assert MATCHED.encode() not in b"".join(r.SerializeToString() for r in received.requests)


def _provider(monkeypatch: pytest.MonkeyPatch, **env: str) -> TracerProvider:
    """setup_tracing as the gateway runs it: the SDK and its exporters read the process environment."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in {
        **env,
        "OTEL_SERVICE_NAME": "menshen-otlp-test",
        "OTEL_TRACES_SAMPLER": "always_on",
    }.items():
        monkeypatch.setenv(name, value)
    provider = setup_tracing(set_global=False)
    assert provider is not None
    return provider


def test_otlp_http_export(http_receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch) -> None:
    base, received = http_receiver
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    provider = _provider(
        monkeypatch,
        OTEL_EXPORTER_OTLP_ENDPOINT=base,
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=menshen,authorization=Bearer%20collector-key",
    )
    telemetry = Telemetry(provider)
    upstream = _one_request(telemetry)
    assert telemetry.force_flush()
    telemetry.shutdown()
    _check(received, upstream)
    assert received.headers[0]["x-tenant"] == "menshen"
    assert received.headers[0]["authorization"] == "Bearer collector-key"
    assert received.headers[0]["content-type"] == "application/x-protobuf"


def test_otlp_grpc_export(grpc_receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, received = grpc_receiver
    provider = _provider(
        monkeypatch,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-tenant=menshen",
    )
    telemetry = Telemetry(provider)
    upstream = _one_request(telemetry)
    assert telemetry.force_flush()
    telemetry.shutdown()
    _check(received, upstream)
    assert received.headers[0]["x-tenant"] == "menshen"

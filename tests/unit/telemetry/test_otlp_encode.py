"""gateway.telemetry.otlp: our bytes parse to exactly what the SDK's OTLP encoder builds, and both exporters
deliver them to real receivers."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from gateway.telemetry import otlp
from gateway.telemetry.otlp import encode_spans
from gateway.telemetry.otlp_exporters import GrpcSpanExporter, HttpSpanExporter
from tests.otlp import Received, otlp_grpc_receiver, otlp_http_receiver

from .conftest import Traced
from .test_spans import _request

CONTEXT = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=False)


def assert_like_sdk(spans: Sequence[ReadableSpan]) -> None:
    ours = encode_spans(spans)
    expected = sdk_encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(ours) == expected
    assert len(ours) == expected.ByteSize()  # the same default-valued fields left out


def decoded_value(value: bool | float) -> AnyValue:
    """The one attribute's value of a span carrying ``{"k": value}``, as encoded and parsed back."""
    request = ExportTraceServiceRequest.FromString(encode_spans([one_span({"k": value})]))
    (kv,) = request.resource_spans[0].scope_spans[0].spans[0].attributes
    decoded: AnyValue = kv.value
    return decoded


def one_span(attributes: Attributes, name: str = "span", resource: Resource | None = None) -> ReadableSpan:
    return ReadableSpan(name, context=CONTEXT, attributes=attributes, resource=resource or RESOURCES[0])


class PropertiesSpan(ReadableSpan):
    """A subclass: encoded through ReadableSpan's public properties rather than its fields."""


# -- generated spans ----------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
EDGE_VALUES = (True, False, 1, 0, -1, 1.0, 0.0, -0.0, math.inf, "", "中文属性值", 2**63 - 1, -(2**63), 10**18)
SCALARS = st.one_of(
    st.text(), st.booleans(), INT64, st.floats(), st.binary(max_size=8), st.sampled_from(EDGE_VALUES)
)
ARRAYS = st.one_of(
    st.lists(st.text(max_size=8), max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(INT64, max_size=4),
    st.lists(st.floats(), max_size=4),
    st.lists(st.none() | st.text(max_size=3), max_size=3),
).flatmap(lambda items: st.sampled_from([items, tuple(items)]))
VALUES = st.one_of(
    SCALARS, ARRAYS, st.none(), st.dictionaries(st.text(max_size=4), SCALARS | st.none(), max_size=3)
)
# A few keys recur so that one key meets values of several types across spans (and the cache).
KEYS = st.text(max_size=12) | st.sampled_from(["k", "gen_ai.request.model", "键"])
PLAIN_ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=5)
# The SDK's own container: cleans values (lists become tuples) and counts what it drops beyond maxlen.
ATTRIBUTES = st.none() | PLAIN_ATTRIBUTES | PLAIN_ATTRIBUTES.map(lambda a: BoundedAttributes(3, a))
TRACE_STATES = st.sampled_from(
    [TraceState(), TraceState([("vendor", "abc")]), TraceState([("congo", "t61rcWkgMzE"), ("rojo", "00f0")])]
)
CONTEXTS = st.builds(
    SpanContext,
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([TraceFlags(0), TraceFlags(1)]),
    trace_state=TRACE_STATES,
)
TIMES = st.none() | st.integers(0, 2**64 - 1)
EVENTS = st.lists(
    st.builds(Event, name=st.text(max_size=10), attributes=ATTRIBUTES, timestamp=TIMES), max_size=3
).flatmap(lambda events: st.sampled_from([events, BoundedList.from_seq(2, events)]))
LINKS = st.lists(st.builds(Link, CONTEXTS, ATTRIBUTES), max_size=3).flatmap(
    lambda links: st.sampled_from([links, BoundedList.from_seq(2, links)])
)
STATUSES = st.builds(Status, st.sampled_from(StatusCode), st.none() | st.text(max_size=10))
SCHEMA = "https://opentelemetry.io/schemas/1.26.0"
# Equal but distinct objects share a group in the SDK's dicts; {"a": 1} == {"a": True}, but their
# json.dumps hashes differ, so those two stay apart; the two-key pair is equal in another order.
RESOURCES = (
    Resource({"service.name": "menshen"}),
    Resource({"service.name": "menshen"}),
    Resource({"service.name": "menshen"}, schema_url=SCHEMA),
    Resource({"a": 1}),
    Resource({"a": True}),
    Resource({"x": "1", "y": 2}),
    Resource({"y": 2, "x": "1"}),
    Resource({}),
)
# The same (name, version, schema_url) hash alike; attributes then tell them apart.
SCOPES = (
    None,
    InstrumentationScope("menshen", "0.1.0"),
    InstrumentationScope("menshen", "0.1.0"),
    InstrumentationScope("menshen", "0.1.0", attributes={"scope.k": 1}),
    InstrumentationScope("menshen", "0.1.0", SCHEMA, {"scope.k": "v"}),
    InstrumentationScope("", None),
)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    cls = draw(st.sampled_from([ReadableSpan, PropertiesSpan]))
    return cls(
        name=draw(st.text(max_size=20)),
        context=draw(CONTEXTS),
        parent=draw(st.none() | CONTEXTS),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(ATTRIBUTES),
        events=draw(EVENTS),
        links=draw(LINKS),
        kind=draw(st.sampled_from(SpanKind)),
        status=draw(STATUSES),
        start_time=draw(TIMES),
        end_time=draw(TIMES),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=8))
def test_generated_spans_encode_like_the_sdk(batch: list[ReadableSpan]) -> None:
    assert_like_sdk(batch)


# -- spans from a real TracerProvider --------------------------------------------------------------------


def provider_spans(traced: Traced) -> list[ReadableSpan]:
    """The gateway's span tree for one blocked chat request, plus spans of two more scopes with links."""
    _request(traced.telemetry)
    provider = traced.telemetry.provider
    assert provider is not None
    scoped = provider.get_tracer("menshen.test", "2.0", schema_url=SCHEMA, attributes={"scope.k": True})
    first = traced.exporter.get_finished_spans()[0].get_span_context()
    assert first is not None
    with scoped.start_as_current_span("linked", links=[Link(first, {"why": "retry", "n": 2})]) as span:
        span.set_status(Status(StatusCode.ERROR, "upstream said no"))
        span.add_event("bare")
    with provider.get_tracer("plain").start_as_current_span("root", kind=SpanKind.PRODUCER):
        pass
    return list(traced.exporter.get_finished_spans())


def test_provider_spans_encode_like_the_sdk(traced: Traced) -> None:
    batch = provider_spans(traced)
    assert len({span.instrumentation_scope for span in batch}) == 3
    assert_like_sdk(batch)
    assert_like_sdk(batch[::-1])  # another first-seen order of scopes
    assert encode_spans(batch) == encode_spans(batch)  # again, from the caches


def test_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == sdk_encode_spans([]).SerializeToString() == b""


def test_values_the_sdk_cannot_encode_are_dropped_alike(caplog: pytest.LogCaptureFixture) -> None:
    attributes: dict[object, object] = {
        "before": 1,
        "object": object(),
        "too big": 2**64,
        "too small": -(2**63) - 1,
        "lone surrogate": "\ud800",
        "bad element": [1, object()],
        5: "a non-string key",
        b"bytes key": "kept, as protobuf takes UTF-8 bytes for a string",
        "after": "x",
    }
    span = one_span(attributes)  # type: ignore[arg-type]
    assert_like_sdk([span])
    request = ExportTraceServiceRequest.FromString(encode_spans([span]))
    kept = [kv.key for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert kept == ["before", "bytes key", "after"]
    assert "Failed to encode key object" in caplog.text


def test_a_span_without_context_fails_like_the_sdk() -> None:
    with pytest.raises(AttributeError):
        sdk_encode_spans([ReadableSpan("no context")])
    with pytest.raises(ValueError, match="no context"):
        encode_spans([ReadableSpan("no context")])


# -- caches -----------------------------------------------------------------------------------------------


def test_true_one_and_one_point_zero_keep_their_types() -> None:
    for _ in range(2):  # the second round comes from the cache
        assert decoded_value(True).WhichOneof("value") == "bool_value"
        assert decoded_value(1).WhichOneof("value") == "int_value"
        assert decoded_value(1.0).WhichOneof("value") == "double_value"
        assert decoded_value(False).WhichOneof("value") == "bool_value"
        assert decoded_value(0).WhichOneof("value") == "int_value"
    assert math.copysign(1, decoded_value(0.0).double_value) == 1
    assert math.copysign(1, decoded_value(-0.0).double_value) == -1
    assert math.copysign(1, decoded_value(0.0).double_value) == 1


def test_caches_stay_bounded() -> None:
    for n in range(otlp._CACHE_MAX + 10):
        encode_spans([one_span({"n": n}, name=f"span {n}")])
        assert all(len(cache) <= otlp._CACHE_MAX for cache in otlp._kv_cache.values())
        assert len(otlp._name_cache) <= otlp._CACHE_MAX
    long_value = "长" * 1000
    assert_like_sdk([one_span({"long": long_value})])
    assert not any(
        key[0] == "long" for cache in otlp._kv_cache.values() for key in cache
    )  # long fields are not kept
    resources = [Resource({"n": n}) for n in range(otlp._PARTS_CACHE_MAX + 10)]
    batch = [one_span({}, resource=r) for r in resources]
    assert_like_sdk(batch)
    assert len(otlp._parts_cache) <= otlp._PARTS_CACHE_MAX


def test_floats_are_not_cached_and_string_lists_are_cached_whole() -> None:
    """A duration rarely repeats: floats would only churn the cache. Finish reasons repeat: a list of
    strings is one cached field, while [1] and [True] (equal lists) keep their own types."""
    otlp._kv_cache.clear()
    for n in range(100):
        assert_like_sdk([one_span({"ttft": n / 7, "reasons": ["stop"], "mixed": [n, True]})])
    assert [key[0] for key in otlp._kv_cache[b"\x4a"]] == ["reasons"]  # span attributes
    for value in ([1], [True], (1,), ("1",), (1,), (True,), ["1"], ("1",)):
        assert_like_sdk([one_span({"list": value})])


def test_a_cached_resource_is_not_confused_with_a_new_one() -> None:
    """The parts cache holds its objects, so an id is not reused for another resource while cached."""
    for n in range(50):
        assert_like_sdk([one_span({}, resource=Resource({"n": n}))])


# -- exporters against real receivers ---------------------------------------------------------------------


@contextmanager
def receiver(protocol: str, fail: bool = False) -> Iterator[tuple[str, Received]]:
    """A receiver for ``protocol`` and the endpoint its exporter takes; ``fail``: 503 / UNAVAILABLE."""
    if protocol == "http":
        with otlp_http_receiver(503 if fail else 200) as (base, received):
            yield f"{base}/v1/traces", received
    else:
        with otlp_grpc_receiver(grpc.StatusCode.UNAVAILABLE if fail else None) as (endpoint, received):
            yield endpoint, received


def exporter(protocol: str, endpoint: str, max_request_size: int | None = None) -> SpanExporter:
    """A short timeout: retrying a retryable failure would then outlast it, so the exporter gives up."""
    if protocol == "http":
        return HttpSpanExporter(endpoint=endpoint, timeout=0.5, max_request_size=max_request_size)
    sender: SpanExporter = GrpcSpanExporter(endpoint=endpoint, timeout=0.5)
    return sender


@contextmanager
def refused_endpoint(protocol: str) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield f"{url}/v1/traces" if protocol == "http" else url


@pytest.mark.usefixtures("no_proxy")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_exporter_delivers_what_the_sdk_encodes(protocol: str, traced: Traced) -> None:
    batch = provider_spans(traced)
    with receiver(protocol) as (endpoint, received):
        sender = exporter(protocol, endpoint)
        assert sender.export(batch) is SpanExportResult.SUCCESS
        sender.shutdown()
        assert sender.export(batch) is SpanExportResult.FAILURE  # after shutdown: refused, not sent
    assert received.requests == [sdk_encode_spans(batch)]


@pytest.mark.usefixtures("no_proxy")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_failing_receiver_gives_failure(protocol: str, traced: Traced) -> None:
    batch = provider_spans(traced)
    with receiver(protocol, fail=True) as (endpoint, received):
        assert exporter(protocol, endpoint).export(batch) is SpanExportResult.FAILURE
    assert received.requests == [sdk_encode_spans(batch)]


@pytest.mark.usefixtures("no_proxy")
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_receiver_gives_failure(protocol: str, traced: Traced) -> None:
    batch = provider_spans(traced)
    with refused_endpoint(protocol) as endpoint:
        assert exporter(protocol, endpoint).export(batch) is SpanExportResult.FAILURE


@pytest.mark.usefixtures("no_proxy")
def test_http_exporter_drops_what_it_cannot_send(traced: Traced) -> None:
    """Too large for max_request_size, or not encodable: FAILURE, and nothing reaches the receiver."""
    batch = provider_spans(traced)
    with receiver("http") as (endpoint, received):
        assert exporter("http", endpoint, max_request_size=100).export(batch) is SpanExportResult.FAILURE
        assert exporter("http", endpoint).export([ReadableSpan("no context")]) is SpanExportResult.FAILURE
    assert received.requests == []

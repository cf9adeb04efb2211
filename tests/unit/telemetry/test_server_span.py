"""The server-span middleware around a real Litestar app, and at the ASGI level inside the access log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.response import Stream
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry import Telemetry, current_ids, current_server_span
from gateway.telemetry.access import RESPONSE, TRACE_ID, AccessLogMiddleware
from gateway.telemetry.server_span import server_span_middleware
from tests.support.telemetry import Traced

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
Message = dict[str, Any]


def _app(telemetry: Telemetry) -> Litestar:
    @get("/v1/models", sync_to_thread=False)
    def models() -> dict[str, str]:
        return {"object": "list"}

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/broken", sync_to_thread=False)
    def broken() -> None:
        raise RuntimeError("boom")

    @get("/stream", sync_to_thread=False)
    def stream() -> Stream:
        def chunks() -> Iterator[bytes]:
            # The server span is current while the body is produced, and still open.
            ids = current_ids()
            assert ids is not None and current_server_span().is_recording()
            yield format(ids[1], "016x").encode()
            yield b"|end"

        return Stream(chunks())

    app = Litestar(route_handlers=[models, healthz, broken, stream])
    wrap = server_span_middleware(telemetry)
    assert wrap is not None
    app.asgi_handler = wrap(app.asgi_handler)  # as create_app wires it: around everything Litestar answers
    return app


async def test_server_spans_through_a_litestar_app(traced: Traced) -> None:
    async with AsyncTestClient(_app(traced.telemetry)) as client:
        headers = {
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
            "authorization": "Bearer secret-token-value",
            "user-agent": "OpenAI/Python 2.8.1 " + "x" * 400,
        }
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/broken")).status_code == 500
        streamed = (await client.get("/stream")).text
        assert (await client.get("/wp-admin/setup.php")).status_code == 404
        assert (await client.request("SCAN", "/v1/models")).status_code == 405
    spans = traced.exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /v1/models", "GET /broken", "GET /stream", "GET", "HTTP"]
    models_span, broken_span, stream_span, unknown_span, odd_method_span = spans
    # Any token is a method on the wire: an unknown one is `_OTHER`, never a span name of its own.
    assert dict(odd_method_span.attributes or {})["http.request.method"] == "_OTHER"
    # An unmatched path names no route: scanners' paths never become span names.
    assert "http.route" not in dict(unknown_span.attributes or {})
    assert dict(unknown_span.attributes or {})["url.path"] == "/wp-admin/setup.php"
    assert models_span.kind is SpanKind.SERVER
    assert format(models_span.context.trace_id, "032x") == CLIENT_TRACE
    assert models_span.parent is not None and format(models_span.parent.span_id, "016x") == CLIENT_SPAN
    attrs = dict(models_span.attributes or {})
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == attrs["url.path"] == "/v1/models"
    assert attrs["url.scheme"] == "http"
    assert attrs["http.response.status_code"] == 200
    assert attrs["client.address"]
    assert str(attrs["user_agent.original"]).startswith("OpenAI/Python 2.8.1")
    assert len(str(attrs["user_agent.original"])) == 256
    assert "secret-token-value" not in models_span.to_json()
    assert "authorization" not in models_span.to_json()
    assert models_span.status.status_code is StatusCode.UNSET
    assert dict(broken_span.attributes or {})["http.response.status_code"] == 500
    assert broken_span.status.status_code is StatusCode.ERROR
    assert broken_span.parent is None, "no traceparent: a new trace"
    assert streamed == f"{stream_span.context.span_id:016x}|end"


async def test_an_unsampled_request_has_ids_but_exports_nothing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with AsyncTestClient(_app(Telemetry(provider))) as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert exporter.get_finished_spans() == ()
        # A sampled caller is continued whatever the root sampler says.
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == CLIENT_TRACE
    provider.shutdown()


# --- at the ASGI level ---------------------------------------------------------------------------------


def _call(app: Any, path: str) -> tuple[list[Message], dict[str, Any]]:
    sent: list[Message] = []
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(app(scope, receive, send))
    return sent, scope


@pytest.mark.parametrize("inside_access_log", [False, True])
def test_the_span_carries_the_status_with_or_without_the_access_log(
    traced: Traced, inside_access_log: bool
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["path_template"] = "/v1/things"
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    wrap = server_span_middleware(traced.telemetry)
    assert wrap is not None
    middleware: Any = wrap(app)
    outer = AccessLogMiddleware(middleware) if inside_access_log else middleware
    sent, scope = _call(outer, "/v1/things")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    _call(outer, "/healthz")  # never traced
    (span,) = traced.exporter.get_finished_spans()
    assert span.name == "POST /v1/things"
    assert dict(span.attributes or {})["http.response.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR
    assert scope["state"][TRACE_ID] == span.context.trace_id  # for the access line
    assert RESPONSE not in scope["state"]  # the access log's status holder does not outlive the request


def test_an_exception_marks_the_span_with_its_type_only(traced: Traced) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("text from the request")

    wrap = server_span_middleware(traced.telemetry)
    assert wrap is not None
    with pytest.raises(ValueError, match="text from the request"):
        _call(wrap(app), "/v1/things")
    (span,) = traced.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ValueError"
    assert "text from the request" not in span.to_json()

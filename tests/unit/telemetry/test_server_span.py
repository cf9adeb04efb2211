"""The server-span middleware at the ASGI level: alone, and inside the access-log middleware whose status it reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gateway.telemetry import Telemetry
from gateway.telemetry.access import RESPONSE, AccessLogMiddleware
from gateway.telemetry.request_trace import RequestTracerProvider
from gateway.telemetry.server_span import ServerSpanConfig, ServerSpanMiddleware

Message = dict[str, Any]


def traced() -> tuple[Telemetry, InMemorySpanExporter]:
    provider = RequestTracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return Telemetry(provider), memory


def config(telemetry: Telemetry, **options: Any) -> ServerSpanConfig:
    return ServerSpanConfig(
        request_tracer=telemetry.request_tracer, untraced_paths=frozenset({"/healthz"}), **options
    )


async def answer(status: int, scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["path_template"] = "/v1/things"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def call(app: Any, path: str) -> tuple[list[Message], dict[str, Any]]:
    sent: list[Message] = []
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(app(scope, receive, send))
    return sent, scope


@pytest.mark.parametrize("inside_access_log", [False, True])
def test_the_span_carries_the_status_with_or_without_the_access_log(inside_access_log: bool) -> None:
    telemetry, memory = traced()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await answer(503, scope, receive, send)

    middleware: Any = ServerSpanMiddleware(app, config(telemetry))
    outer = AccessLogMiddleware(middleware) if inside_access_log else middleware
    sent, scope = call(outer, "/v1/things")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    call(outer, "/healthz")  # never traced
    (span,) = memory.get_finished_spans()
    assert span.name == "POST /v1/things"
    assert dict(span.attributes or {})["http.response.status_code"] == 503
    assert span.status.status_code is StatusCode.ERROR
    assert RESPONSE not in scope["state"]  # the access log's status holder does not outlive the request


def test_the_plugins_exclusions_are_refused_for_exact_untraced_paths() -> None:
    telemetry, _ = traced()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await answer(200, scope, receive, send)

    for options in ({"exclude": ["^/v1"]}, {"exclude_opt_key": "skip"}):
        with pytest.raises(ValueError, match="untraced_paths"):
            ServerSpanMiddleware(app, config(telemetry, **options))

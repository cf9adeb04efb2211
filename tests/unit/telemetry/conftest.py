"""Fixtures for telemetry tests: an in-memory span exporter and captured JSON logs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Scrubber, Telemetry, configure_logging
from tests.logcapture import saved_logging


@dataclass
class Traced:
    telemetry: Telemetry
    exporter: InMemorySpanExporter

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}


@pytest.fixture
def traced() -> Iterator[Traced]:
    """A Telemetry whose spans land in memory; the global tracer provider is left alone."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(Telemetry(provider), exporter)
    provider.shutdown()


@dataclass
class Captured:
    stream: io.StringIO

    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture
def captured_logs() -> Iterator[Captured]:
    """configure_logging into a buffer; the previous logging set-up is restored afterwards."""
    with saved_logging():
        stream = io.StringIO()
        configure_logging(
            "DEBUG", json=True, stream=stream, scrubber=Scrubber(literals=["s3cr3t-client-secret-value"])
        )
        yield Captured(stream)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports to local receivers never go through a proxy from the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

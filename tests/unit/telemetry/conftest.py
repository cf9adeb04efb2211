"""Fixtures for telemetry tests: an in-memory span exporter and captured JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Scrubber, Telemetry, configure_logging


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
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    libs = [
        logging.getLogger(n)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "litestar")
    ]
    saved_libs = [(lib, list(lib.handlers), lib.level, lib.propagate) for lib in libs]
    stream = io.StringIO()
    configure_logging(
        "DEBUG", json=True, stream=stream, scrubber=Scrubber(literals=["s3cr3t-client-secret-value"])
    )
    yield Captured(stream)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for lib, handlers, level, propagate in saved_libs:
        lib.handlers[:] = handlers
        lib.setLevel(level)
        lib.propagate = propagate
    structlog.reset_defaults()

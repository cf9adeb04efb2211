"""Fixtures for telemetry tests: an in-memory span exporter and captured JSON logs."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Scrubber, Telemetry, configure_logging
from tests.support.logcapture import saved_logging
from tests.support.telemetry import Captured, Traced


@pytest.fixture
def traced() -> Iterator[Traced]:
    """A Telemetry whose spans land in memory; the global tracer provider is left alone."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(Telemetry(provider), exporter)
    provider.shutdown()


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

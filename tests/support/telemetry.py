"""Shared test helpers (moved out of tests/unit/telemetry/conftest.py)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Telemetry


@dataclass
class Traced:
    telemetry: Telemetry
    exporter: InMemorySpanExporter

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}


@dataclass
class Captured:
    stream: io.StringIO

    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

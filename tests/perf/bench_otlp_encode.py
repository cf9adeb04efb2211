"""OTLP span encoding: the SDK's protobuf encoder vs ``gateway.telemetry.otlp.encode_spans``, µs per span.

Spans are made as the gateway makes them (``Telemetry`` on a real ``TracerProvider``, in-memory exporter),
shaped like one gateway request's six:
a SERVER span with 15 attributes (token counts varying per request, finish reasons a list), four
INTERNAL phases with 0-2 attributes and one CLIENT span to the engine with 5. Three cases, each timed for
both encoders in the same run (best of ``--repeat`` alternating passes):

  request  each request's six spans encoded on their own (a small export)
  batch    batches of 512 spans (BatchSpanProcessor's default export size)
  records  what the gateway's OTLP export does: ``encode_request`` on each request's span records as the
           request ends (the SDK column: the same spans as ReadableSpans, each request on its own)

"SDK" is ``encode_spans(spans).SerializePartialToString()``, what the stock OTLP/HTTP exporter sends;
"ours" is the bytes the HTTP exporter sends; "ours+parse" adds the ``FromString`` that the gRPC exporter
does. Target: ours <= 1/4 of the SDK's time per span.

    .venv/bin/python tests/perf/bench_otlp_encode.py [--requests 400] [--repeat 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.perf` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.telemetry import Telemetry
from gateway.telemetry.otlp import encode_request, encode_spans
from gateway.telemetry.request_trace import (
    AttributeValue,
    RequestSpanProcessor,
    RequestTrace,
    RequestTracerProvider,
    phase,
)
from tests.perf._bench_common import load_average, verdict

TARGET = 4.0
BATCH = 512
PHASES: tuple[tuple[str, dict[str, AttributeValue]], ...] = (
    ("menshen.auth", {"menshen.client_id": "team-a"}),
    ("menshen.admission", {"menshen.client_id": "team-a", "menshen.policy.version": "2025-06-01.3"}),
    ("menshen.input_guard", {}),
    ("menshen.stream", {"menshen.stream": True}),
)


class _Keep(RequestSpanProcessor):
    def __init__(self) -> None:
        self.requests: list[RequestTrace] = []

    def on_request_end(self, request: RequestTrace) -> None:
        self.requests.append(request)


def request_spans(rng: random.Random, requests: int) -> tuple[list[list[ReadableSpan]], list[RequestTrace]]:
    """``requests`` requests' spans, six each, made as the gateway makes them (``Telemetry``): as
    ReadableSpans, and as the finished request traces they were made from."""
    exporter = InMemorySpanExporter()
    kept = _Keep()
    provider = RequestTracerProvider(resource=Resource.create({"service.name": "menshen"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(kept)
    telemetry = Telemetry(provider)
    out = []
    for _ in range(requests):
        carrier = {"traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"}
        with telemetry.server_span(
            "POST /v1/chat/completions", carrier if rng.random() < 0.5 else None
        ) as server:
            server.set_attributes(_server_attributes(rng))
            for name, attrs in PHASES:
                with phase(name, attributes=dict(attrs)):
                    pass
            with telemetry.engine_span("chat", "Qwen3-8B", "http://10.0.3.17:8000"):
                pass
        out.append(list(exporter.get_finished_spans()))
        exporter.clear()
    provider.shutdown()
    return out, kept.requests


def _server_attributes(rng: random.Random) -> dict[str, AttributeValue]:
    return {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "url.scheme": "https",
        "user_agent.original": "OpenAI/Python 1.82.0",
        "client.address": "10.0.8.41",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "Qwen3-8B",
        "gen_ai.request.max_tokens": 1024,
        "menshen.client_id": "team-a",
        "menshen.policy.version": "2025-06-01.3",
        "gen_ai.usage.input_tokens": rng.randint(20, 4000),
        "gen_ai.usage.output_tokens": rng.randint(1, 1024),
        "gen_ai.response.finish_reasons": (
            rng.choice(("stop", "length")),
        ),  # a tuple, as the recorder sets it
    }


def per_span_us(
    encoders: Sequence[Callable[[Any], object]], exports: Sequence[Sequence[Any]], spans: int, repeat: int
) -> list[float]:
    """Best µs per span of each encoder over its own exports; passes alternate between the encoders so
    that drift hits all alike."""
    best = [float("inf")] * len(encoders)
    for _ in range(repeat):
        for i, (encode, items) in enumerate(zip(encoders, exports, strict=True)):
            t0 = time.perf_counter()
            for item in items:
                encode(item)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [b / spans * 1e6 for b in best]


def sdk(spans: Sequence[ReadableSpan]) -> bytes:
    body: bytes = sdk_encode_spans(spans).SerializePartialToString()
    return body


def ours_parsed(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encode_spans(spans))
    return request


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="requests (six spans each) to encode")
    parser.add_argument("--repeat", type=int, default=7, help="timed passes; the best one counts")
    args = parser.parse_args()
    print(f"load average: {load_average()}")
    per_request, records = request_spans(random.Random(7), args.requests)
    flat = [span for spans in per_request for span in spans]
    batches = [flat[i : i + BATCH] for i in range(0, len(flat), BATCH)]
    for spans in (per_request[0], batches[0]):  # a benchmark of a wrong encoder proves nothing
        assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == sdk_encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(
        encode_spans([encode_request(records[0])])
    ) == sdk_encode_spans(per_request[0])

    print(f"{'µs per span':<28}{'SDK':>8}{'ours':>8}{'ours+parse':>12}{'SDK/ours':>10}")
    ok = True
    for case, exports in (("request (6 spans)", per_request), (f"batch ({BATCH} spans)", batches)):
        three = (exports, exports, exports)
        t_sdk, t_ours, t_parsed = per_span_us((sdk, encode_spans, ours_parsed), three, len(flat), args.repeat)
        ratio = t_sdk / t_ours
        ok = ok and ratio >= TARGET
        print(f"{case:<28}{t_sdk:8.2f}{t_ours:8.2f}{t_parsed:12.2f}{ratio:9.1f}x")
    t_sdk, t_ours = per_span_us((sdk, encode_request), (per_request, records), len(flat), args.repeat)
    ok = ok and t_sdk / t_ours >= TARGET
    print(f"{'records (6 spans)':<28}{t_sdk:8.2f}{t_ours:8.2f}{'':>12}{t_sdk / t_ours:9.1f}x")
    print(f"target: ours <= 1/{TARGET:g} of the SDK's time per span: {verdict(ok)}")


if __name__ == "__main__":
    main()

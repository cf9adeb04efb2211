"""What tracing costs the running gateway: CPU per non-streamed request and per streamed chunk.

Three gateways (``python -m gateway serve``, the default policy bundle) run side by side in front of one fake
vLLM engine:

  off   no OTEL_* variables: no tracer, no server-span middleware
  0.1   OTLP/HTTP to a local sink with the default sampler (parentbased_traceidratio, ratio 0.1)
  1.0   the same with OTEL_TRACES_SAMPLER_ARG=1: every request traced and exported

Rounds alternate their order (off, 0.1, 1.0, then 1.0, 0.1, off, ...) so that the shared machine's drift
hits all alike. The figure per configuration is the median over its rounds of gateway-process CPU divided by
the requests (non-streamed, a few tokens) or by the engine chunks relayed (concurrent streams; chunks are
counted at the engine). The ratio to ``off`` is the median of the per-round ratios: a round's runs are next
to each other in time, so a slow spell of the machine cancels out of it. A last line times the telemetry
helpers alone, in this process, for one request's worth of spans. These figures are a report, not a target.

    .venv/bin/python tests/perf/bench_telemetry.py [--rounds 3] [--seconds 1.5] [--streams 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf._bench_common import (
    Conn,
    bench_policies,
    chat_body,
    cpu_seconds,
    json_load,
    load_average,
    median,
    otlp_sink,
    post_bytes,
    runner,
    start_fake,
    start_gateway,
    stop_process,
    stream_load,
)

STREAM_TOKENS = 100
CONFIGS = ("off", "0.1", "1.0")
Load = Callable[[], tuple[int, int]]


def _envs(traces_url: str) -> dict[str, dict[str, str]]:
    otlp = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_url}  # the sampler left to its default
    return {"off": {}, "0.1": otlp, "1.0": {**otlp, "OTEL_TRACES_SAMPLER_ARG": "1"}}


def _rounds(pids: dict[str, int], loads: dict[str, Load], rounds: int, per: str) -> dict[str, list[float]]:
    """Microseconds of gateway CPU per unit (``per``: "request" or "chunk"), one entry per round."""
    figures: dict[str, list[float]] = {name: [] for name in pids}
    order = list(pids)
    for _ in range(rounds):
        for name in order:
            before = cpu_seconds(pids[name])
            requests, chunks = loads[name]()
            units = requests if per == "request" else chunks
            if units == 0:
                raise RuntimeError(f"{name}: no {per} completed")
            figures[name].append((cpu_seconds(pids[name]) - before) / units * 1e6)
        order.reverse()  # no configuration is always last
    return figures


def _answer_chunks(port: int) -> int:
    """SSE chunks of one answer straight from the fake engine ([DONE] excluded)."""

    async def one() -> int:
        conn = await Conn.open(port)
        try:
            request = post_bytes("/v1/chat/completions", chat_body(stream=True), port)
            return (await conn.stream(request)).events - 1
        finally:
            conn.close()

    return runner()(one())


def _helpers_alone(n: int = 3000) -> dict[str, float]:
    """In-process CPU (us) of one request's spans, exported through the SDK's batch processor and encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from gateway.guardrails.pipeline import Decision
    from gateway.telemetry import (
        SPAN_ADMISSION,
        SPAN_AUTH,
        SPAN_INPUT_GUARD,
        SPAN_STREAM,
        Telemetry,
        add_decision_event,
        engine_span,
        inject_traceparent,
        phase,
        request_attributes,
        response_attributes,
        start_span,
    )

    class Encode(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()  # what the OTLP exporters do with a batch
            return SpanExportResult.SUCCESS

    decision = Decision("words.x", "c", "flag", "shadow", "output", 1, 5, matched="abcd")

    def one(t: Telemetry) -> None:
        with t.server_span("POST /v1/chat/completions") as s:
            for name in (SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD):
                with phase(name):
                    pass
            with engine_span("chat", "qwen3-8b", "http://127.0.0.1:8000"):
                inject_traceparent({})
            stream = start_span(SPAN_STREAM)
            add_decision_event(stream, decision)
            stream.end()
            attrs = request_attributes(operation="chat", model="qwen3-8b", max_tokens=256, client_id="a")
            s.set_attributes(
                response_attributes(
                    attrs, input_tokens=10, output_tokens=100, finish_reasons=["stop"], ttft_s=0.1
                )
            )

    def timed(ratio: float | None) -> float:
        provider = None
        if ratio is not None:
            provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
            # A queue for the whole run: the stock 2,048 would drop spans, and their cost with them.
            provider.add_span_processor(BatchSpanProcessor(Encode(), max_queue_size=8 * n))
        t = Telemetry(provider)
        for _ in range(200):
            one(t)
        c0 = time.process_time()
        for _ in range(n):
            one(t)
        t.force_flush()  # the export thread's CPU is this process's too
        spent = (time.process_time() - c0) / n * 1e6
        t.shutdown()
        return spent

    return {"off": timed(None), "0.1": timed(0.1), "1.0": timed(1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per configuration")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one load round")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams in the chunk rounds")
    parser.add_argument("--workers", type=int, default=4, help="connections in the request rounds")
    args = parser.parse_args()
    run = runner()

    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp_dir, otlp_sink() as (sink_url, sink):
        tmp = Path(tmp_dir)
        policies = bench_policies(tmp / "policies", passthrough=False)
        fake, fake_port = start_fake(STREAM_TOKENS)
        gateways = {}
        try:
            upstream = f"http://127.0.0.1:{fake_port}"
            chunks_per_answer = _answer_chunks(fake_port)
            for name, env in _envs(sink_url).items():
                gateways[name] = start_gateway(upstream, policies, tmp / f"data-{name}", env=env)
            pids = {name: proc.pid for name, (proc, _, _) in gateways.items()}
            ports = {name: port for name, (_, port, _) in gateways.items()}

            def json_round(port: int) -> Load:
                request = post_bytes("/v1/chat/completions", chat_body(stream=False, max_tokens=4), port)

                def load() -> tuple[int, int]:
                    done, _, errors = run(json_load(port, request, args.workers, args.seconds))
                    if errors:
                        raise RuntimeError(f"{errors} failed requests")
                    return done, 0

                return load

            def stream_round(port: int) -> Load:
                request = post_bytes("/v1/chat/completions", chat_body(stream=True), port)

                def load() -> tuple[int, int]:
                    result = run(stream_load(port, request, args.streams, args.seconds))
                    if result.errors:
                        raise RuntimeError(f"{result.errors} failed streams: {result.first_error}")
                    return result.requests, result.requests * chunks_per_answer

                return load

            for port in ports.values():  # warm: imports, first connections, policy caches
                json_round(port)()
            per_request = _rounds(pids, {n: json_round(p) for n, p in ports.items()}, args.rounds, "request")
            per_chunk = _rounds(pids, {n: stream_round(p) for n, p in ports.items()}, args.rounds, "chunk")
        finally:
            for proc, _, _ in gateways.values():
                stop_process(proc)
            stop_process(fake)
        spans = sink.spans()

    helpers = _helpers_alone()
    print(f"load average: {load_average()}; {args.rounds} alternating rounds x {args.seconds:.1f} s each")
    print(f"{'gateway CPU (us)':18s} {'off':>8s} {'ratio 0.1':>10s} {'ratio 1.0':>10s}   0.1/off   1.0/off")
    for label, figures in (("per request", per_request), ("per chunk", per_chunk)):
        medians = [median(figures[name]) for name in CONFIGS]
        ratios = [
            median([b / a for a, b in zip(figures["off"], figures[name], strict=True)])
            for name in CONFIGS[1:]
        ]
        print(
            f"{label:18s} {medians[0]:8.1f} {medians[1]:10.1f} {medians[2]:10.1f}"
            f"   {ratios[0]:7.3f}   {ratios[1]:7.3f}"
        )
        for name in CONFIGS:
            print(f"{'':20s}{name:4s} rounds: {', '.join(f'{v:.1f}' for v in figures[name])}")
    print(f"OTLP sink: {sink.requests} exports, {sink.size:,} bytes, {spans} spans")
    print(
        "telemetry helpers alone (6 spans, in process, export included): "
        + ", ".join(f"{helpers[name]:.1f} us {name}" for name in CONFIGS)
    )


if __name__ == "__main__":
    main()

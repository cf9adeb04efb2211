"""What tracing costs the running gateway: CPU per request and per streamed chunk, tracing off vs on.

Two gateways (``python -m gateway serve``, the default policy bundle, metrics always on) run side by side
in front of one fake vLLM engine:

  off      no OTEL_* variables: no-op tracer, no server-span middleware
  sampled  the same exporter set-up at ratio 0.0: the ASGI middleware and non-recording spans only
  on       OTLP/HTTP to a local sink, sampler ``parentbased_traceidratio`` at 1.0, batch export

Rounds alternate between them (off, sampled, on, then on, sampled, off, ...) so that the shared machine's drift hits both
alike; the figure per configuration is the median over its rounds of gateway-process CPU divided by the
requests (non-streamed, a few tokens) or by the engine chunks relayed (concurrent streams; the gateway
may coalesce several chunks into one read when it falls behind, so chunks are counted at the engine).
The added cost is the median of the per-round ratios on/off (each round's three runs are next to each
other in time, so a slow spell of the machine cancels out of a round's ratio), with the middle half of
those ratios beside it. A last section
times the telemetry helpers alone, in this process, for one request's worth of spans and metrics.
Target (issue 5): tracing on adds <= 10% to both figures.

CPU time on a shared machine moves by 10-30% from round to round. ``--instructions N`` adds a figure that
does not: each configuration in turn under valgrind's callgrind, the instructions the gateway process
executes (all threads) for N sequential non-streamed requests, divided by N. Exports are then triggered
by batch size only (OTEL_BSP_SCHEDULE_DELAY is raised), as they are at full speed; the gateway runs about
50 times slower under valgrind, so this takes a few minutes.

    .venv/bin/python tests/perf/bench_telemetry.py [--rounds 3] [--seconds 1.5] [--streams 16] [--instructions 1024]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
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
    otel_env,
    otlp_sink,
    post_bytes,
    runner,
    start_fake,
    start_gateway,
    stop_process,
    stream_load,
    verdict,
)

TARGET = 0.10
STREAM_TOKENS = 100


def _measure(pid: int, load: Callable[[], tuple[int, int]]) -> tuple[float, int, int]:
    """(gateway CPU seconds, requests, chunks) of one load round."""
    before = cpu_seconds(pid)
    requests, chunks = load()
    return cpu_seconds(pid) - before, requests, chunks


def _rounds(
    pids: dict[str, int], loads: dict[str, Callable[[], tuple[int, int]]], rounds: int, per: str
) -> dict[str, list[float]]:
    """Microseconds of gateway CPU per unit (``per``: "request" or "chunk"), one entry per round."""
    figures: dict[str, list[float]] = {name: [] for name in pids}
    order = list(pids)
    for _ in range(rounds):
        for name in order:
            cpu, requests, chunks = _measure(pids[name], loads[name])
            units = requests if per == "request" else chunks
            if units == 0:
                raise RuntimeError(f"{name}: no {per} completed")
            figures[name].append(cpu / units * 1e6)
        order.reverse()  # off, sampled, on, then on, sampled, off: no configuration is always last
    return figures


def _answer_chunks(port: int) -> int:
    """SSE chunks of one answer straight from the fake engine ([DONE] excluded)."""

    async def one() -> int:
        conn = await Conn.open(port)
        try:
            return (
                await conn.stream(post_bytes("/v1/chat/completions", chat_body(stream=True), port))
            ).events - 1
        finally:
            conn.close()

    return runner()(one())


def _helpers_alone(n: int = 3000) -> tuple[float, float]:
    """In-process CPU (us) of one request's spans + metrics with tracing on, and of metrics alone."""
    from gateway.telemetry.otlp import EncodedRequest, encode_spans
    from gateway.telemetry.otlp_exporters import RequestBatchSpanProcessor
    from gateway.telemetry.request_trace import RequestTracerProvider, start_span
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gateway.guardrails.pipeline import Decision
    from gateway.telemetry import (
        SPAN_ADMISSION,
        SPAN_AUTH,
        SPAN_INPUT_GUARD,
        SPAN_STREAM,
        Metrics,
        Telemetry,
        add_decision_event,
        inject_traceparent,
        request_attributes,
        response_attributes,
    )

    class Encode(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan | EncodedRequest]) -> SpanExportResult:  # type: ignore[override]
            encode_spans(spans)  # what the gateway's OTLP exporters do with a batch
            return SpanExportResult.SUCCESS

    decision = Decision("words.x", "c", "flag", "shadow", "output", 1, 5, matched="abcd")
    # What the server-span middleware records for a chat request.
    server_attrs = {
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "url.scheme": "http",
        "user_agent.original": "OpenAI/Python 2.8.1",
        "client.address": "127.0.0.1",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
    }

    def one(t: Telemetry, m: Metrics) -> None:
        with t.server_span("POST /v1/chat/completions", attributes=dict(server_attrs)) as s:
            for phase in (SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD):
                with t.phase(phase):
                    pass
            with t.engine_span("chat", "qwen3-8b", "http://127.0.0.1:8000"):
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
        m.observe_request(route="/v1/chat/completions", status=200, client="a", duration_s=0.5)
        m.observe_ttft(route="/v1/chat/completions", seconds=0.1)
        m.add_tokens(client="a", input_tokens=10, output_tokens=100)

    def timed(t: Telemetry, m: Metrics) -> float:
        for _ in range(200):
            one(t, m)
        c0 = time.process_time()
        for _ in range(n):
            one(t, m)
        if t.provider is not None:
            t.provider.force_flush()
        return (time.process_time() - c0) / n * 1e6

    provider = RequestTracerProvider()  # as setup_tracing builds it for OTLP export
    provider.add_span_processor(RequestBatchSpanProcessor(Encode()))  # type: ignore[arg-type]
    on = timed(Telemetry(provider), Metrics())
    provider.shutdown()
    off = timed(Telemetry(None), Metrics())
    return on, off


def _sequential(port: int, request: bytes, n: int) -> None:
    async def go() -> None:
        conn = await Conn.open(port)
        try:
            for _ in range(n):
                await conn.json(request)
        finally:
            conn.close()

    runner()(go())


def _callgrind_totals(out: Path) -> int:
    """Instructions in callgrind's dumps of ``out`` (``out.1``, ...): the last ``totals:`` line of each."""
    total = 0
    for part in out.parent.glob(out.name + ".*"):
        lines = [line for line in part.read_text().splitlines() if line.startswith("totals:")]
        total += int(lines[-1].split()[1]) if lines else 0
    return total


def _instructions(
    upstream: str, policies: Path, tmp: Path, envs: dict[str, dict[str, str]], n: int
) -> dict[str, float]:
    """Instructions per non-streamed request, by configuration, counted by callgrind."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise SystemExit("--instructions needs valgrind (callgrind and callgrind_control)")
    figures: dict[str, float] = {}
    for name, env in envs.items():  # one at a time: each is a valgrind process
        out = tmp / f"callgrind-{name}.out"
        tool = [valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        env = {**env, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
        proc, port, _ = start_gateway(
            upstream, policies, tmp / f"data-cg-{name}", env=env, prefix=tool, startup_s=900
        )
        try:
            request = post_bytes("/v1/chat/completions", chat_body(stream=False, max_tokens=4), port)
            _sequential(port, request, 50)  # warm: imports, caches, connections
            subprocess.run([control, "-i", "on", str(proc.pid)], check=True, capture_output=True)
            _sequential(port, request, n)
            time.sleep(10)  # the batch the last request filled is exported inside the window
            subprocess.run([control, "-i", "off", str(proc.pid)], check=True, capture_output=True)
            subprocess.run([control, "-d", str(proc.pid)], check=True, capture_output=True)
        finally:
            stop_process(proc, timeout=120)
        figures[name] = _callgrind_totals(out) / n
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per configuration")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one load round")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams in the chunk rounds")
    parser.add_argument("--workers", type=int, default=4, help="connections in the request rounds")
    parser.add_argument(
        "--instructions", type=int, default=0, metavar="N", help="also count instructions over N requests"
    )
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
            gateways["off"] = start_gateway(upstream, policies, tmp / "data-off")
            unsampled = {**otel_env(sink_url), "OTEL_TRACES_SAMPLER_ARG": "0.0"}
            gateways["sampled"] = start_gateway(upstream, policies, tmp / "data-sampled", env=unsampled)
            gateways["on"] = start_gateway(upstream, policies, tmp / "data-on", env=otel_env(sink_url))
            pids = {name: proc.pid for name, (proc, _, _) in gateways.items()}
            ports = {name: port for name, (_, port, _) in gateways.items()}

            def json_round(port: int) -> Callable[[], tuple[int, int]]:
                request = post_bytes("/v1/chat/completions", chat_body(stream=False, max_tokens=4), port)

                def load() -> tuple[int, int]:
                    done, _, errors = run(json_load(port, request, args.workers, args.seconds))
                    if errors:
                        raise RuntimeError(f"{errors} failed requests")
                    return done, 0

                return load

            def stream_round(port: int) -> Callable[[], tuple[int, int]]:
                request = post_bytes("/v1/chat/completions", chat_body(stream=True), port)

                def load() -> tuple[int, int]:
                    result = run(stream_load(port, request, args.streams, args.seconds))
                    if result.errors:
                        raise RuntimeError(f"{result.errors} failed streams: {result.first_error}")
                    return result.requests, result.requests * chunks_per_answer

                return load

            # Warm both (imports, first connections, policy caches) before measuring.
            for port in ports.values():
                json_round(port)()
            per_request = _rounds(pids, {n: json_round(p) for n, p in ports.items()}, args.rounds, "request")
            per_chunk = _rounds(pids, {n: stream_round(p) for n, p in ports.items()}, args.rounds, "chunk")
            for proc, _, _ in gateways.values():
                stop_process(proc)
            instructions = {}
            if args.instructions:
                envs = {"off": {}, "sampled": unsampled, "on": otel_env(sink_url)}
                instructions = _instructions(upstream, policies, tmp, envs, args.instructions)
        finally:
            for proc, _, _ in gateways.values():
                stop_process(proc)
            stop_process(fake)
        spans = sink.spans()

    helpers_on, helpers_off = _helpers_alone()
    print(
        f"load average: {load_average()}; {args.rounds} alternating rounds x {args.seconds:.1f} s per configuration"
    )
    print(
        f"{'gateway CPU (us)':22s} {'off':>9s} {'ratio 0.0':>10s} {'ratio 1.0':>10s} {'added':>8s}  target <= {TARGET:.0%}"
    )
    ok = True
    for label, figures in (("per request", per_request), ("per chunk", per_chunk)):
        off, sampled, on = (median(figures[name]) for name in ("off", "sampled", "on"))
        ratios = sorted(b / a for a, b in zip(figures["off"], figures["on"], strict=True))
        added = median(ratios) - 1
        quarter = len(ratios) // 4
        spread = f"(middle half of the rounds: {ratios[quarter] - 1:+.1%} to {ratios[-1 - quarter] - 1:+.1%})"
        ok &= added <= TARGET
        print(
            f"{label:22s} {off:9.1f} {sampled:10.1f} {on:10.1f} {added:+8.1%}  {verdict(added <= TARGET)}  {spread}"
        )
        for name in ("off", "sampled", "on"):
            print(f"{'':24s}{name:8s} rounds: {', '.join(f'{v:.1f}' for v in figures[name])}")
    if instructions:
        off, sampled, on = (instructions[name] for name in ("off", "sampled", "on"))
        added = on / off - 1
        print(
            f"{'instructions/request':22s} {off:9,.0f} {sampled:10,.0f} {on:10,.0f} {added:+8.1%}  "
            f"{verdict(added <= TARGET)}  (callgrind, {args.instructions} sequential requests each)"
        )
    print(f"OTLP sink: {sink.requests} exports, {sink.size:,} bytes, {spans} spans")
    print(
        f"telemetry helpers alone (6 spans + metrics, in process): {helpers_on:.1f} us traced, {helpers_off:.1f} us off"
    )
    print("overall:", verdict(ok))


if __name__ == "__main__":
    main()

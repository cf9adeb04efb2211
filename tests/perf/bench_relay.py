"""What the gateway costs on the relay path, measured side by side against the fake vLLM engine.

Processes: the fake engine, the gateway (``python -m gateway serve``) and this raw-socket client that only
counts SSE events. Policy configurations:

  a  pass-through: policies/default without guardrail rules and with loop detection off (the skeleton relay)
  b  the default bundle (full stream pipeline)
  c  the default bundle with tracing on: OTLP/HTTP to a local sink, sampler ratio 1.0 (metrics are always on)

For each: time to first text direct vs through the gateway (interleaved sequential requests); gateway CPU
per engine chunk and chunks/s over 100 concurrent streams from a fake at full speed (reads batch several
chunks when the gateway falls behind); the same CPU per chunk against a fake pacing each stream like an
engine does (about one chunk per network read, the realistic case); gateway CPU per small non-streamed
request. Targets (issues 2 and 5): TTFT +<= 1 ms median, <= 30 us CPU per chunk, >= 10,000 chunks/s,
tracing (c) <= 10% more CPU than (b). Exits 0; prints PASS/FAIL per target.

    .venv/bin/python tests/perf/bench_relay.py [--configs a,b,c] [--seconds 4] [--streams 100]
    .venv/bin/python tests/perf/bench_relay.py --profile b:stream    # or b:json, a:paced: cProfile hot spots
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf._bench_common import (
    Conn,
    LoadResult,
    Probe,
    bench_policies,
    chat_body,
    closed_connections,
    cpu_split,
    json_load,
    load_average,
    median,
    otel_env,
    otlp_sink,
    post_bytes,
    runner,
    start_fake,
    start_gateway,
    start_raw_relay,
    stop_process,
    stream_load,
    thread_cpu_seconds,
    verdict,
)

PATH = "/v1/chat/completions"
NAMES = {
    "r": "raw TCP relay",
    "a": "pass-through",
    "b": "default bundle",
    "c": "default + tracing",
    "f": "default + gc.freeze",
}


@dataclass(slots=True)
class Fakes:
    fast: int  # port of the fake at rate 0
    paced: int  # port of the fake pacing tokens
    fast_chunks: int  # engine chunks per streamed answer (SSE events without [DONE])
    paced_chunks: int


@dataclass(slots=True)
class Figures:
    ttft_direct_ms: float = 0.0
    ttft_gateway_ms: float = 0.0
    ttft_added_ms: float = 0.0
    sat_cpu_us: float = 0.0  # per engine chunk, full-speed fake
    sat_sys_share: float = 0.0  # kernel share of that CPU
    sat_chunks_per_s: float = 0.0
    sat_busy: float = 0.0  # relay CPU seconds per wall second
    sat_events_per_answer: float = 0.0
    sat_gc_share: float = 0.0  # share of the relay's CPU spent in the garbage collector
    paced_cpu_us: float = 0.0  # per engine chunk, paced fake
    paced_chunks_per_s: float = 0.0
    paced_ttft_direct_ms: float = 0.0
    paced_ttft_added_ms: float = 0.0
    request_cpu_us: float = 0.0  # per non-streamed request
    requests_per_s: float = 0.0
    request_gc_share: float = 0.0
    request_other_threads: float = 0.0  # share of the request CPU outside the event-loop thread
    gc_full_runs: int = 0
    gc_full_ms: float = 0.0
    upstream_conns_per_request: float = 0.0
    errors: int = 0
    first_error: str | None = None

    def cells(self) -> list[str]:
        return [
            f"{self.ttft_direct_ms:.2f}",
            f"{self.ttft_gateway_ms:.2f}",
            f"{self.ttft_added_ms:+.2f}",
            f"{self.sat_cpu_us:.1f}",
            f"{self.sat_sys_share:.0%}",
            f"{self.sat_chunks_per_s:,.0f}",
            f"{self.sat_busy:.2f}",
            f"{self.sat_gc_share:.0%}",
            f"{self.paced_cpu_us:.1f}",
            f"{self.paced_ttft_added_ms:+.1f}",
            f"{self.request_cpu_us:,.0f}",
            f"{self.requests_per_s:,.0f}",
            f"{self.request_gc_share:.0%}",
            str(self.errors),
        ]


HEAD = [
    "config", "TTFT direct ms", "TTFT via ms", "added ms", "CPU/chunk us", "sys", "chunks/s", "CPU busy", "GC",
    "paced CPU/chunk us", "paced TTFT added ms", "CPU/request us", "req/s", "GC", "errors",
]  # fmt: skip


async def _ttft_pairs(direct: int, gateway: int, body: bytes, pairs: int) -> list[tuple[float, float]]:
    """Sequential requests, direct and through the gateway alternately (order flipped every pair)."""
    conns = {direct: await Conn.open(direct), gateway: await Conn.open(gateway)}
    requests = {port: post_bytes(PATH, body, port) for port in conns}
    out: list[tuple[float, float]] = []
    try:
        for i in range(pairs):
            got: dict[int, float] = {}
            for port in (direct, gateway) if i % 2 == 0 else (gateway, direct):
                got[port] = (await conns[port].stream(requests[port])).first_text_s
            out.append((got[direct], got[gateway]))
    finally:
        for conn in conns.values():
            conn.close()
    return out


def _loaded(
    pid: int, probe: Probe, load: Callable[[], LoadResult], chunks_per_answer: int, fig: Figures | None = None
) -> tuple[float, float, float, float, float, LoadResult]:
    """(CPU us per engine chunk, kernel share, chunks/s, CPU busy, GC share) of process ``pid`` over ``load``."""
    probe.start()
    user0, sys0 = cpu_split(pid)
    result = load()
    user1, sys1 = cpu_split(pid)
    gc = probe.stop()
    cpu = (user1 - user0) + (sys1 - sys0)
    chunks = result.requests * chunks_per_answer
    if fig is not None:
        fig.errors += result.errors
        fig.first_error = fig.first_error or result.first_error
        fig.gc_full_runs += gc.runs[2]
        fig.gc_full_ms += gc.seconds[2] * 1e3
    share = (sys1 - sys0) / cpu if cpu else 0.0
    gc_share = gc.total_s / cpu if cpu else 0.0
    return (
        cpu / max(chunks, 1) * 1e6,
        share,
        chunks / result.elapsed_s,
        cpu / result.elapsed_s,
        gc_share,
        result,
    )


def _measure_fast(
    pid: int, probe: Probe, gport: int, fakes: Fakes, args: argparse.Namespace, fig: Figures
) -> None:
    run = runner()
    stream_req = post_bytes(PATH, chat_body(stream=True), gport)
    run(stream_load(gport, stream_req, 10, 0.5))  # warm up connections and code paths

    closed0 = closed_connections(fakes.fast)
    pairs = run(_ttft_pairs(fakes.fast, gport, chat_body(stream=True, max_tokens=16), args.ttft_pairs))
    # Both client connections are kept alive: a closed connection is one the relay opened upstream and dropped.
    fig.upstream_conns_per_request = (closed_connections(fakes.fast) - closed0) / max(len(pairs), 1)
    fig.ttft_direct_ms = median([p[0] for p in pairs]) * 1e3
    fig.ttft_gateway_ms = median([p[1] for p in pairs]) * 1e3
    fig.ttft_added_ms = median([p[1] - p[0] for p in pairs]) * 1e3

    fig.sat_cpu_us, fig.sat_sys_share, fig.sat_chunks_per_s, fig.sat_busy, fig.sat_gc_share, load = _loaded(
        pid,
        probe,
        lambda: run(stream_load(gport, stream_req, args.streams, args.seconds)),
        fakes.fast_chunks,
        fig,
    )
    fig.sat_events_per_answer = load.events / max(load.requests, 1)

    small = post_bytes(PATH, chat_body(stream=False, max_tokens=8), gport)
    run(json_load(gport, small, 2, 0.2))
    probe.start()
    main0, other0 = thread_cpu_seconds(pid)
    n, elapsed, errors = run(json_load(gport, small, args.json_workers, args.json_seconds))
    main1, other1 = thread_cpu_seconds(pid)
    gc = probe.stop()
    cpu = (main1 - main0) + (other1 - other0)
    fig.request_other_threads = (other1 - other0) / cpu if cpu else 0.0
    fig.errors += errors
    fig.request_cpu_us = cpu / max(n, 1) * 1e6
    fig.request_gc_share = gc.total_s / cpu if cpu else 0.0
    fig.gc_full_runs += gc.runs[2]
    fig.gc_full_ms += gc.seconds[2] * 1e3
    fig.requests_per_s = n / elapsed


def _measure_paced(
    pid: int, probe: Probe, gport: int, fakes: Fakes, args: argparse.Namespace, fig: Figures
) -> None:
    run = runner()
    pairs = run(_ttft_pairs(fakes.paced, gport, chat_body(stream=True, max_tokens=16), args.paced_pairs))
    fig.paced_ttft_direct_ms = median([p[0] for p in pairs]) * 1e3
    fig.paced_ttft_added_ms = median([p[1] - p[0] for p in pairs]) * 1e3
    request = post_bytes(PATH, chat_body(stream=True), gport)
    fig.paced_cpu_us, _, fig.paced_chunks_per_s, _, _, _ = _loaded(
        pid,
        probe,
        lambda: run(stream_load(gport, request, args.streams, args.seconds)),
        fakes.paced_chunks,
        fig,
    )


def _answer_chunks(port: int) -> int:
    async def one() -> int:
        conn = await Conn.open(port)
        try:
            return (await conn.stream(post_bytes(PATH, chat_body(stream=True), port))).events - 1
        finally:
            conn.close()

    return runner()(one())


def _profile(spec: str, policies: dict[str, Path], fakes: Fakes, tmp: Path, args: argparse.Namespace) -> None:
    """Profile one steady-state load (not start-up) of a gateway with cProfile and print the hot spots."""
    config, _, load = spec.partition(":")
    load = load or "stream"
    out = tmp / f"gateway-{config}-{load}.prof"
    port = fakes.paced if load == "paced" else fakes.fast
    gw, gport, probe = start_gateway(
        f"http://127.0.0.1:{port}",
        policies[config],
        tmp / "data-prof",
        env=otel_env(args.sink_url) if config == "c" else None,
        gc_freeze=config == "f",
        profile_to=out,
    )
    try:
        run = runner()
        run(stream_load(gport, post_bytes(PATH, chat_body(stream=True), gport), 10, 0.5))  # warm up
        probe.start()
        if load == "json":
            request = post_bytes(PATH, chat_body(stream=False, max_tokens=8), gport)
            run(json_load(gport, request, args.json_workers, args.seconds))
        else:
            request = post_bytes(PATH, chat_body(stream=True), gport)
            run(stream_load(gport, request, args.streams, args.seconds))
        gc = probe.stop()
    finally:
        stop_process(gw)
    stats = pstats.Stats(str(out))
    print(f"\ncProfile of the gateway (steady state only): config {config} ({NAMES[config]}), {load} load")
    print(f"garbage collector: runs per generation {gc.runs}, seconds {[round(x, 3) for x in gc.seconds]}")
    _print_by_package(stats)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(r"(gateway|engine)/", 25)
    print(f"profile kept in {out}")


def _package(path: str) -> str:
    """Where a profiled function lives: a site-package, a gateway/engine subpackage or a stdlib module."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    parts = Path(path).parts
    for root in ("gateway", "engine"):
        if root in parts:
            rest = parts[parts.index(root) + 1 :]
            return "/".join((root, *rest[:1])) if len(rest) > 1 else root
    if path.startswith("~") or path.startswith("<"):
        return "builtins and C code"
    return (
        "stdlib " + Path(path).parent.name
        if Path(path).parent.name != "python3.11"
        else "stdlib " + Path(path).stem
    )


def _print_by_package(stats: pstats.Stats) -> None:
    totals: dict[str, float] = {}
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (path, _line, _name), (_cc, _nc, own, _cum, _callers) in table.items():
        key = _package(path)
        totals[key] = totals.get(key, 0.0) + own
    whole = sum(totals.values()) or 1.0
    print("-- own CPU time by package --")
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:18]:
        print(f"  {seconds / whole:6.1%}  {seconds:7.3f} s  {key}")


def _print_report(
    rows: dict[str, Figures],
    fakes: Fakes,
    fake_alone: tuple[float, float],
    sink: str,
    args: argparse.Namespace,
) -> None:
    print(f"\nMenshen relay benchmark: {os.cpu_count()} CPUs, load average {load_average()} (shared machine)")
    print(
        f"fake engine at rate 0: {args.tokens}-token answers = {fakes.fast_chunks} engine chunks; alone it streams "
        f"{fake_alone[0]:,.0f} chunks/s to {args.streams} streams at {fake_alone[1]:.1f} us CPU/chunk"
    )
    print(
        f"TTFT: median of {args.ttft_pairs} interleaved sequential pairs (16-token answers, time to first text). "
        f"Load: {args.streams} concurrent streams, {args.seconds:.0f} s. Paced: fake at {args.paced_rate:.0f} "
        f"tokens/s per stream, same load, TTFT of {args.paced_pairs} pairs. Non-streamed: {args.json_workers} "
        f"connections, 8-token answers, {args.json_seconds:.1f} s. CPU = gateway process utime+stime.\n"
    )
    body = [[f"{k} {NAMES[k]}", *f.cells()] for k, f in rows.items()]
    widths = [max(len(r[i]) for r in [HEAD, *body]) for i in range(len(HEAD))]
    for r in [HEAD, *body]:
        print(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    if sink:
        print(f"\n{sink}")

    print("\nTargets:")
    for k, f in rows.items():
        if k == "r":
            continue
        print(
            f"  [{verdict(f.ttft_added_ms <= 1.0)}] {k}: TTFT added {f.ttft_added_ms:+.2f} ms median (<= 1 ms)"
        )
        print(
            f"  [{verdict(f.sat_cpu_us <= 30.0)}] {k}: CPU per chunk {f.sat_cpu_us:.1f} us at full speed, "
            f"{f.paced_cpu_us:.1f} us paced (<= 30 us)"
        )
        print(
            f"  [{verdict(f.sat_chunks_per_s >= 10_000)}] {k}: {f.sat_chunks_per_s:,.0f} chunks/s (>= 10,000)"
        )
    if "b" in rows and "c" in rows:
        b, c = rows["b"], rows["c"]
        for label, cb, bb in (
            ("CPU per chunk (full speed)", c.sat_cpu_us, b.sat_cpu_us),
            ("CPU per chunk (paced)", c.paced_cpu_us, b.paced_cpu_us),
            ("CPU per request", c.request_cpu_us, b.request_cpu_us),
        ):
            print(f"  [{verdict(cb / bb <= 1.10)}] tracing: {label} c/b = {cb / bb:.3f} (<= 1.10)")
    if "a" in rows and "b" in rows:
        a, b = rows["a"], rows["b"]
        print(
            f"  (info) full pipeline vs pass-through, b/a: CPU per chunk {b.sat_cpu_us / a.sat_cpu_us:.2f} (full speed), "
            f"{b.paced_cpu_us / a.paced_cpu_us:.2f} (paced), per request {b.request_cpu_us / a.request_cpu_us:.2f}"
        )
    if "b" in rows and "f" in rows:
        b, f = rows["b"], rows["f"]
        print(
            f"  (info) gc.freeze() after start-up, f/b: CPU per chunk {f.sat_cpu_us / b.sat_cpu_us:.2f} "
            f"(full speed), {f.paced_cpu_us / b.paced_cpu_us:.2f} (paced), per request "
            f"{f.request_cpu_us / b.request_cpu_us:.2f}"
        )
    print("\nDetails:")
    for k, f in rows.items():
        lines = [
            f"{f.sat_events_per_answer:.1f} SSE events reach the client per answer (the engine sent "
            f"{fakes.fast_chunks + 1} with [DONE])",
            f"{f.upstream_conns_per_request:.2f} upstream TCP connections opened and closed per sequential "
            "request (0 = kept alive)",
            f"paced: direct TTFT {f.paced_ttft_direct_ms:.1f} ms, {f.paced_chunks_per_s:,.0f} chunks/s relayed",
        ]
        if k != "r":
            lines.append(
                f"{f.gc_full_runs} full (gen 2) garbage collections during the measurements, "
                f"{f.gc_full_ms:,.0f} ms of CPU in total"
            )
            lines.append(
                f"{f.request_other_threads:.0%} of the non-streamed request CPU outside the event-loop thread"
            )
        if f.errors:
            lines.append(f"{f.errors} failed requests, first: {f.first_error}")
        print(f"  {k} {NAMES[k]}:")
        for line in lines:
            print(f"      {line}")


def _launch(
    config: str, port: int, policies: dict[str, Path], tmp: Path, sink_url: str
) -> tuple[subprocess.Popen[Any], int, Probe]:
    """The relay under test for ``config``, in front of the fake on ``port``."""
    if config == "r":
        proc, relay_port = start_raw_relay(port)
        return proc, relay_port, Probe()
    return start_gateway(
        f"http://127.0.0.1:{port}",
        policies[config],
        tmp / f"data-{config}-{port}",
        env=otel_env(sink_url) if config == "c" else None,
        gc_freeze=config == "f",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default="r,a,b,c",
        help="comma list of r (raw TCP relay floor), a, b, c, f (b + gc.freeze)",
    )
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--tokens", type=int, default=100, help="tokens of each answer of the full-speed fake"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each streaming load")
    parser.add_argument("--ttft-pairs", type=int, default=100)
    parser.add_argument(
        "--paced-rate", type=float, default=50.0, help="tokens/s per stream of the paced fake"
    )
    parser.add_argument("--paced-tokens", type=int, default=50)
    parser.add_argument("--paced-pairs", type=int, default=5)
    parser.add_argument("--json-workers", type=int, default=8)
    parser.add_argument("--json-seconds", type=float, default=2.0)
    parser.add_argument("--profile", metavar="CONFIG[:stream|json|paced]", help="only profile one load")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="menshen-bench-"))
    policies = {
        "a": bench_policies(tmp / "policies-a", passthrough=True),
        "b": bench_policies(tmp / "policies-b", passthrough=False),
    }
    policies["c"] = policies["f"] = policies["b"]
    procs: list[subprocess.Popen[str]] = []
    rows: dict[str, Figures] = {}
    try:
        fast, fast_port = start_fake(args.tokens)
        procs.append(fast)
        paced, paced_port = start_fake(args.paced_tokens, rate=args.paced_rate)
        procs.append(paced)
        fakes = Fakes(fast_port, paced_port, _answer_chunks(fast_port), _answer_chunks(paced_port))
        with otlp_sink() as (sink_url, sink):
            args.sink_url = sink_url
            if args.profile:
                _profile(args.profile, policies, fakes, tmp, args)
                return
            # The fake alone under the same load: the ceiling every relay is measured against.
            request = post_bytes(PATH, chat_body(stream=True), fast_port)
            f_cpu, _, f_rate, _, _, _ = _loaded(
                fast.pid,
                Probe(),
                lambda: runner()(stream_load(fast_port, request, 100, 2.0)),
                fakes.fast_chunks,
            )
            for config in configs:
                fig = rows[config] = Figures()
                for port, measure in ((fast_port, _measure_fast), (paced_port, _measure_paced)):
                    relay, relay_port, probe = _launch(config, port, policies, tmp, sink_url)
                    try:
                        measure(relay.pid, probe, relay_port, fakes, args, fig)
                    finally:
                        stop_process(relay)  # the gateway flushes its span exporter on the way out
        spans = sink.spans()
        sink_line = (
            f"OTLP sink (config c): {sink.requests} exports, {sink.size:,} bytes, {spans} spans"
            if "c" in rows
            else ""
        )
    finally:
        for proc in procs:
            stop_process(proc)
    _print_report(rows, fakes, (f_rate, f_cpu), sink_line, args)


if __name__ == "__main__":
    main()

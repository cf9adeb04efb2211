"""Gateway CPU per engine chunk: streamed tool-call arguments against content, side by side in one run.

Two measurements. First the relay path alone, in this process: the engine's payloads, byte for byte as the
fake engine (vLLM's wire format) sends them, fed one chunk per read through a ``Transcoder`` with the default
bundle's stream checks (guardrails and loop detector), as a request gets them; process CPU per chunk, rounds
alternating. This is the figure the target applies to: it holds everything else equal. Then end to end: the
same JSON text (a search tool's arguments) streams in the same pieces, once as ``delta.content`` and once
as ``delta.tool_calls[0].function.arguments`` (vLLM's hermes format: a header delta, then fragments). The fake
engine runs in this process, the gateway (``python -m gateway serve``, default bundle: full stream pipeline) as
a process of its own; CPU is the gateway process's utime+stime over each load, divided by the engine chunks
relayed. Rounds alternate the two loads so that machine noise falls on both. Target: tool-call arguments cost
no more than content on the relay path (ratio <= 1.10, the noise of a shared machine). End to end, the fake
writes tool-call deltas through another path than content (each encoded and awaited), so the two loads differ
in how chunks group into reads and in the fake's own CPU beside the gateway: those figures are for
information. Exits 0; prints PASS/FAIL.

    .venv/bin/python tests/perf/bench_tool_calls.py [--streams 20] [--seconds 3] [--rounds 3] [--pieces 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.guardrails import StreamPipeline, compile_guardrails, loop_check_for
from gateway.policy.store import PolicyStore
from gateway.relay.endpoints import CHAT
from gateway.relay.transcoder import Transcoder
from tests.fakes import wire
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script, ToolCallPiece
from tests.perf._bench_common import (
    DEFAULT_POLICIES,
    MODEL,
    Conn,
    bench_policies,
    chat_body,
    cpu_split,
    load_average,
    median,
    post_bytes,
    runner,
    start_gateway,
    stop_process,
    stream_load,
    verdict,
)

PATH = "/v1/chat/completions"
TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the knowledge base.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def _arguments(pieces: int, size: int) -> list[str]:
    """JSON arguments cut into ``pieces`` fragments of ``size`` characters (the last closes the object)."""
    words = "quarterly revenue of the northern region compared with last year by product line and month "
    body = (words * (pieces * size // len(words) + 1))[: pieces * size - 13]
    text = json.dumps({"query": body})
    return [text[i : i + size] for i in range(0, len(text), size)]


def _payloads(fragments: list[str]) -> dict[str, list[bytes]]:
    """Each answer's engine payloads (SSE data, without framing) as vLLM sends them: role, text, finish, usage."""
    cid, created, model = "chatcmpl-bench", 1765000000, MODEL

    def chunk(delta: dict[str, object]) -> bytes:
        return wire.encode(wire.chat_delta_chunk(cid, created, model, delta))

    def ends(reason: str, n: int) -> list[bytes]:
        usage = wire.chat_usage_chunk(cid, created, model, wire.usage(20, n), None)
        finish = wire.chat_finish_chunk(cid, created, model, {}, reason, None)
        return [wire.encode(finish), wire.encode(usage), b"[DONE]"]

    role = wire.encode(wire.chat_role_chunk(cid, created, model))
    content = [chunk(wire.delta(content=f)) for f in fragments]
    calls = [chunk(wire.tool_call_start(0, "chatcmpl-tool-0123456789abcdef", "search"))]
    calls += [chunk(wire.tool_call_arguments(0, f)) for f in fragments[1:]]
    return {
        "content": [role, *content, *ends("stop", len(content))],
        "tools": [role, *calls, *ends("tool_calls", len(calls))],
    }


def _relay_cpu(payloads: dict[str, list[bytes]], answers: int, rounds: int) -> dict[str, list[float]]:
    """Process CPU us per engine chunk of the transcoder and the default bundle's stream checks."""
    snapshot = PolicyStore.open(DEFAULT_POLICIES, compiler=compile_guardrails).current
    out: dict[str, list[float]] = {"content": [], "tools": []}
    for i in range(rounds):
        for kind in ("content", "tools") if i % 2 == 0 else ("tools", "content"):
            chunks = payloads[kind]
            t0 = time.process_time()
            for _ in range(answers):
                loop = loop_check_for(snapshot.bundle, "bench")
                checks = [snapshot.guardrails.stream_check("bench"), *([loop] if loop else [])]
                t = Transcoder(
                    endpoint=CHAT,
                    request_id="r",
                    model=MODEL,
                    pipeline=StreamPipeline(checks),
                    include_usage=True,
                    prompt_estimate=20,
                )
                for payload in chunks:
                    t.feed([payload])
                t.end()
            out[kind].append((time.process_time() - t0) / (answers * len(chunks)) * 1e6)
    return out


def _engine_chunks(port: int, request: bytes) -> int:
    async def one() -> int:
        conn = await Conn.open(port)
        try:
            return (await conn.stream(request)).events - 1  # without [DONE]
        finally:
            conn.close()

    return runner()(one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two loads")
    parser.add_argument("--pieces", type=int, default=100, help="engine chunks of text per answer")
    parser.add_argument("--size", type=int, default=5, help="characters per chunk")
    parser.add_argument("--answers", type=int, default=300, help="answers per round of the relay-path figure")
    args = parser.parse_args()

    fragments = _arguments(args.pieces, args.size)
    payloads = _payloads(fragments)
    relay = _relay_cpu(payloads, args.answers, args.rounds * 2 + 1)
    scripts = {
        "content": Script.of(fragments),
        # the header delta stands in for the content's first piece: the same number of engine chunks
        "tools": Script.calling(ToolCallPiece("search", tuple(fragments[1:]))),
    }
    tmp = Path(tempfile.mkdtemp(prefix="menshen-bench-tools-"))
    policies = bench_policies(tmp / "policies", passthrough=False)
    with FakeEngine(models=(MODEL,), scripts=scripts) as fake:
        port = fake.port
        requests = {
            "content": chat_body(stream=True, prompt="[[script:content]] go"),
            "tools": chat_body(stream=True, prompt="[[script:tools]] go", tools=[TOOL]),
        }
        chunks = {k: _engine_chunks(port, post_bytes(PATH, body, port)) for k, body in requests.items()}
        gateway, gport, _ = start_gateway(fake.url, policies, tmp / "data")
        figures: dict[str, list[float]] = {"content": [], "tools": []}
        rates: dict[str, list[float]] = {"content": [], "tools": []}
        try:
            run = runner()
            wire = {k: post_bytes(PATH, body, gport) for k, body in requests.items()}
            for request in wire.values():
                run(stream_load(gport, request, 4, 0.5))  # warm up both code paths
            for i in range(args.rounds):
                for kind in ("content", "tools") if i % 2 == 0 else ("tools", "content"):
                    user0, sys0 = cpu_split(gateway.pid)
                    result = run(stream_load(gport, wire[kind], args.streams, args.seconds))
                    user1, sys1 = cpu_split(gateway.pid)
                    if result.errors:
                        raise SystemExit(f"{result.errors} failed requests: {result.first_error}")
                    relayed = result.requests * chunks[kind]
                    figures[kind].append(((user1 - user0) + (sys1 - sys0)) / max(relayed, 1) * 1e6)
                    rates[kind].append(relayed / result.elapsed_s)
        finally:
            stop_process(gateway)

    print(f"\nMenshen tool-call bench: {os.cpu_count()} CPUs, load average {load_average()} (shared machine)")
    print(
        f"default bundle; {args.streams} concurrent streams, {args.seconds:.0f} s per load, {args.rounds} rounds; "
        f"{chunks['content']} engine chunks per content answer, {chunks['tools']} per tool-call answer, "
        f"{args.size} characters a chunk"
    )
    labels = (("content", "content"), ("tools", "tool-call arguments"))
    print(
        f"\nrelay path (transcoder + default stream checks, one chunk per read, {args.answers} answers a round)"
    )
    print(f"{'stream of':<22}{'CPU/chunk us (median)':>24}   rounds")
    for kind, label in labels:
        rounds = " ".join(f"{x:.1f}" for x in relay[kind])
        print(f"{label:<22}{median(relay[kind]):>24.2f}   {rounds}")
    print("\nend to end (gateway process CPU / engine chunks; fake in this process)")
    print(f"{'stream of':<22}{'CPU/chunk us (median)':>24}{'rounds':>32}{'chunks/s':>12}")
    for kind, label in labels:
        rounds = " ".join(f"{x:.1f}" for x in figures[kind])
        print(f"{label:<22}{median(figures[kind]):>24.1f}{rounds:>32}{median(rates[kind]):>12,.0f}")
    ratio = median(relay["tools"]) / median(relay["content"])
    e2e = median(figures["tools"]) / median(figures["content"])
    print(
        f"\n  [{verdict(ratio <= 1.10)}] relay path: tool-call arguments / content CPU per chunk = {ratio:.2f} (<= 1.10)"
    )
    print(f"  (info) end to end: tool-call arguments / content CPU per chunk = {e2e:.2f}")


if __name__ == "__main__":
    main()

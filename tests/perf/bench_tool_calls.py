"""Gateway CPU per engine chunk: streamed tool-call arguments against content, side by side in one run.

The same JSON text (a search tool's arguments) streams in the same pieces, once as ``delta.content`` and once
as ``delta.tool_calls[0].function.arguments`` (vLLM's hermes format: a header delta, then fragments). The fake
engine runs in this process, the gateway (``python -m gateway serve``, default bundle: full stream pipeline) as
a process of its own; CPU is the gateway process's utime+stime over each load, divided by the engine chunks
relayed. Rounds alternate the two loads so that machine noise falls on both. Target: tool-call arguments cost
no more than content (ratio <= 1.10, the noise of a shared machine). Exits 0; prints PASS/FAIL.

    .venv/bin/python tests/perf/bench_tool_calls.py [--streams 20] [--seconds 3] [--rounds 3] [--pieces 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script, ToolCallPiece
from tests.perf._bench_common import (
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
    args = parser.parse_args()

    fragments = _arguments(args.pieces, args.size)
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
    print(f"{'stream of':<22}{'CPU/chunk us (median)':>24}{'rounds':>32}{'chunks/s':>12}")
    for kind, label in (("content", "content"), ("tools", "tool-call arguments")):
        rounds = " ".join(f"{x:.1f}" for x in figures[kind])
        print(f"{label:<22}{median(figures[kind]):>24.1f}{rounds:>32}{median(rates[kind]):>12,.0f}")
    ratio = median(figures["tools"]) / median(figures["content"])
    print(
        f"\n  [{verdict(ratio <= 1.10)}] tool-call arguments / content CPU per chunk = {ratio:.2f} (<= 1.10)"
    )


if __name__ == "__main__":
    main()

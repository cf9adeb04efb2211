"""How fast the fake engine streams: chunks/s across concurrent streams and its CPU cost per chunk.

Runs the fake as a separate process (as the gateway benchmarks do) and drains its streams with a raw socket
client that only counts SSE events, so the figure is the fake's, not a client library's.

    .venv/bin/python tests/perf/bench_fake_engine.py [--streams 100] [--tokens 200] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf._bench_common import cpu_seconds, runner, start_fake, stop_process

_BODY = json.dumps(
    {
        "model": "Qwen/Qwen3-8B",
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


_END = b"\r\n0\r\n\r\n"  # the chunk carrying [DONE], then the terminating zero-size chunk


async def _stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> tuple[int, float]:
    """One streamed request on a kept-alive connection; returns (SSE events, time to first event)."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(_BODY)}\r\n\r\n"
    ).encode()
    t0 = time.perf_counter()
    writer.write(head + _BODY)
    events, ttft, tail = 0, 0.0, b""
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("fake engine closed the connection")
        buf = tail + data
        n = buf.count(b"data: ") - tail.count(b"data: ")
        if n and not events:
            ttft = time.perf_counter() - t0
        events += n
        tail = buf[-16:]
        if tail.endswith(_END) and b"data: [DONE]" in buf[-64:]:
            return events, ttft


async def _worker(host: str, port: int, until: float, out: list[tuple[int, float]]) -> None:
    # keep-alive, as the gateway's pooled engine client does: fresh connections would measure TCP slow start
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < until:
        out.append(await _stream(reader, writer, host))
    writer.close()


async def _run(host: str, port: int, streams: int, seconds: float) -> tuple[int, int, float, list[float]]:
    results: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(*(_worker(host, port, until, results) for _ in range(streams)))
    elapsed = time.perf_counter() - t0
    return sum(e for e, _ in results), len(results), elapsed, sorted(t for _, t in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("engine_args", nargs="*", help="extra arguments for the fake engine")
    args = parser.parse_args()

    proc, port = start_fake(args.tokens, 0.0, args.engine_args)
    try:
        run = runner()
        run(_run("127.0.0.1", port, 5, 0.5))  # warm up
        cpu0, own0 = cpu_seconds(proc.pid), cpu_seconds(os.getpid())
        events, requests, elapsed, ttfts = run(_run("127.0.0.1", port, args.streams, args.seconds))
        cpu, own = cpu_seconds(proc.pid) - cpu0, cpu_seconds(os.getpid()) - own0
    finally:
        stop_process(proc)
    print(f"fake engine: {args.streams} concurrent streams x {args.tokens} tokens, rate 0, {elapsed:.1f} s")
    print(f"  requests completed : {requests}")
    print(f"  SSE events         : {events}  ({events / elapsed:,.0f} chunks/s)")
    print(f"  fake CPU per chunk : {cpu / events * 1e6:.1f} us  (fake process CPU {cpu:.2f} s)")
    print(f"  client CPU         : {own:.2f} s (below {elapsed:.1f} s: the client was not the bottleneck)")
    print(f"  time to first event: median {ttfts[len(ttfts) // 2] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

"""Why the engine client is aiohttp: client CPU per engine chunk, httpx against aiohttp, side by side.

The fake vLLM engine (its own process) streams 100-token answers as fast as it can to ``--streams``
concurrent streams; each client library reads them the way ``engine/client.py`` does (one pooled
keep-alive client, raw reads as they arrive) on uvloop, and the process's CPU is divided by the SSE events
received. The rounds alternate, so both libraries see the same machine.

    .venv/bin/python tests/perf/bench_engine_client.py [--streams 100] [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import httpx
import uvloop

from tests.perf._bench_common import chat_body, load_average, median, start_fake, stop_process

_HEADERS = {"content-type": "application/json"}


async def _httpx(url: str, body: bytes, streams: int, seconds: float) -> tuple[float, int]:
    events = 0
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal events
            while time.monotonic() < end:
                async with client.stream("POST", url, content=body, headers=_HEADERS) as response:
                    async for data in response.aiter_raw():
                        events += data.count(b"data: ")

        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return time.process_time() - t0, events


async def _aiohttp(url: str, body: bytes, streams: int, seconds: float) -> tuple[float, int]:
    events = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=streams)) as client:
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal events
            while time.monotonic() < end:
                async with client.post(url, data=body, headers=_HEADERS) as response:
                    async for data in response.content.iter_any():
                        events += data.count(b"data: ")

        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return time.process_time() - t0, events


Client = Callable[[str, bytes, int, float], Coroutine[Any, Any, tuple[float, int]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    proc, port = start_fake(100)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = chat_body(stream=True)
        clients: dict[str, Client] = {"httpx": _httpx, "aiohttp": _aiohttp}
        per_event: dict[str, list[float]] = {name: [] for name in clients}
        rates: dict[str, list[float]] = {name: [] for name in clients}
        print(f"engine client libraries: {args.streams} streams, load average {load_average()}")
        for i in range(args.rounds):
            for name in clients if i % 2 == 0 else reversed(clients):
                cpu, events = uvloop.run(clients[name](url, body, args.streams, args.seconds))
                per_event[name].append(cpu / max(events, 1) * 1e6)
                rates[name].append(events / args.seconds)
                print(
                    f"  round {i + 1} {name:8s} {per_event[name][-1]:7.1f} us CPU per engine chunk, "
                    f"{rates[name][-1]:,.0f} chunks/s"
                )
        h, a = median(per_event["httpx"]), median(per_event["aiohttp"])
        print(f"median: httpx {h:.1f} us, aiohttp {a:.1f} us per engine chunk; httpx costs {h / a:.1f}x")
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()

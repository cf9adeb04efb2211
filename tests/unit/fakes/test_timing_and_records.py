"""Pacing, stalls, and what the fake records of each request."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import httpx

from tests.fakes import FakeEngine, Script
from tests.support.fakes import MODEL

STREAM = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _arrivals(client: httpx.AsyncClient) -> list[float]:
    times: list[float] = []
    async with client.stream("POST", "/v1/chat/completions", json=STREAM) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                times.append(time.monotonic())
    return times


async def test_rate_paces_tokens(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["t"] * 10)
    engine.rate = 50.0  # 20 ms a token
    start = time.monotonic()
    times = await _arrivals(http)
    # role, 10 tokens, EOS finish, [DONE]: the first token comes with the role chunk, 10 intervals follow
    assert len(times) == 13
    assert times[-1] - start >= 10 * 0.02 * 0.9
    engine.rate = 0.0
    start = time.monotonic()
    await _arrivals(http)
    assert time.monotonic() - start < 0.15


async def test_first_token_delay_and_stall(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["a", "b", "c"], first_token_delay=0.2, stalls=((2, 0.3),))
    start = time.monotonic()
    times = await _arrivals(http)
    assert times[0] - start >= 0.2  # role chunk waits for the first token
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.3
    assert gaps.index(max(gaps)) == 2  # before the third token


async def test_records_headers_and_body(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await http.post(
        "/v1/chat/completions", json=STREAM, headers={"traceparent": tp, "authorization": "Bearer k"}
    )
    record = engine.last_request
    assert record.headers["traceparent"] == tp
    assert record.headers["authorization"] == "Bearer k"
    assert record.json == STREAM
    assert record.status == 200
    assert record.finished_at is not None
    assert record.finished_at >= record.received_at


async def test_chunked_request_body_is_read(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "Qwen/Qwen3-8B", '
        yield b'"messages": [{"role": "user", "content": "hi"}]}'

    resp = await http.post(
        "/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200
    assert engine.last_request.json["messages"][0]["content"] == "hi"


async def test_running_count_during_a_stall(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["a", "b"], stalls=((1, 5.0),))
    async with http.stream("POST", "/v1/chat/completions", json=STREAM) as resp:
        async for line in resp.aiter_lines():
            if '"content":"a"' in line:
                break
        metrics = (await http.get("/metrics")).text
        assert f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 1.0' in metrics

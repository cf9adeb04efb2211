"""Client disconnects are seen at once, counted as aborts, and free the running slot."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.fakes import FakeEngine, Script
from tests.support.fakes import MODEL

STREAM = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _read_events(resp: httpx.Response, count: int) -> None:
    seen = 0
    async for line in resp.aiter_lines():
        if line.startswith("data: "):
            seen += 1
            if seen == count:
                return


async def test_close_mid_stream_is_an_abort_within_a_second(engine: FakeEngine) -> None:
    engine.default_script = Script.lorem(1000, rate=50)
    async with (
        httpx.AsyncClient(base_url=engine.url) as client,
        client.stream("POST", "/v1/chat/completions", json=STREAM) as resp,
    ):
        await _read_events(resp, 3)
        assert engine.running == 1
        closed_at = time.monotonic()
    # leaving the block closes the response: httpx drops the unfinished connection
    await engine.wait_until(lambda: engine.aborted_total == 1, within=1.0)
    record = engine.last_request
    assert record.aborted_at is not None
    assert 0 <= record.aborted_at - closed_at < 1.0
    assert 3 <= record.chunks_sent < 1000
    await engine.wait_until(lambda: engine.running == 0, within=1.0)


async def test_close_before_the_first_token(engine: FakeEngine) -> None:
    engine.default_script = Script.of("late", first_token_delay=30)
    async with (
        httpx.AsyncClient(base_url=engine.url) as client,
        client.stream("POST", "/v1/chat/completions", json=STREAM) as resp,
    ):
        assert resp.status_code == 200  # headers come first, as with vLLM
        await engine.wait_until(lambda: engine.running == 1)
        closed_at = time.monotonic()
    detected = await engine.wait_until(lambda: engine.aborted_total == 1, within=1.0)
    assert detected - closed_at < 1.0
    assert engine.last_request.chunks_sent == 0
    await engine.wait_until(lambda: engine.running == 0, within=1.0)


async def test_non_streamed_request_abandoned_is_an_abort(engine: FakeEngine) -> None:
    engine.default_script = Script.of("slow", first_token_delay=30)
    async with httpx.AsyncClient(base_url=engine.url) as client:
        task = asyncio.create_task(client.post("/v1/chat/completions", json={**STREAM, "stream": False}))
        await engine.wait_until(lambda: engine.running == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await engine.wait_until(lambda: engine.aborted_total == 1, within=1.0)


async def test_finished_streams_on_a_kept_alive_connection_are_not_aborts(engine: FakeEngine) -> None:
    async with httpx.AsyncClient(base_url=engine.url) as client:
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json=STREAM)
            assert resp.text.endswith("data: [DONE]\n\n")
    await asyncio.sleep(0.05)
    assert (engine.requests_total, engine.completed_total, engine.aborted_total) == (3, 3, 0)
    assert engine.running == 0


def test_abort_seen_in_thread_mode() -> None:
    with FakeEngine(default_script=Script.lorem(500, rate=100)) as fe:
        with httpx.Client(base_url=fe.url) as client:
            with client.stream("POST", "/v1/chat/completions", json={**STREAM, "model": None}) as resp:
                next(resp.iter_lines())
            closed_at = time.monotonic()
        detected = fe.wait_until_blocking(lambda: fe.aborted_total == 1, within=1.0)
        assert detected - closed_at < 1.0

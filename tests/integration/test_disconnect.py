"""A client that goes away makes the gateway close the upstream within a second, so vLLM aborts."""

from __future__ import annotations

import contextlib
import threading

import httpx

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import RunningGateway, wait_for


def _body(script: str, stream: bool) -> dict[str, object]:
    return {
        "model": "qwen3-8b",
        "messages": [{"role": "user", "content": f"[[script:{script}]]"}],
        "stream": stream,
    }


def test_disconnect_mid_stream_closes_upstream(gateway: RunningGateway, fake_engine: FakeEngine) -> None:
    fake_engine.scripts["long"] = Script.lorem(2000, rate=50)
    with httpx.stream(
        "POST", gateway.api + "/chat/completions", json=_body("long", True), timeout=10
    ) as response:
        lines = response.iter_lines()
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 5:
                break
    # Leaving the block closes the client connection mid-stream.
    took = wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)
    assert took < 1.0
    wait_for(lambda: fake_engine.running == 0, within=1.0)  # the abort is counted a moment before the slot


def test_disconnect_before_first_token(gateway: RunningGateway, fake_engine: FakeEngine) -> None:
    fake_engine.scripts["prefill"] = Script.of("late answer", first_token_delay=5.0)
    client = httpx.Client(timeout=10)
    with client.stream("POST", gateway.api + "/chat/completions", json=_body("prefill", True)) as response:
        assert response.status_code == 200
    client.close()
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


def test_disconnect_non_streamed(gateway: RunningGateway, fake_engine: FakeEngine) -> None:
    fake_engine.scripts["long"] = Script.lorem(2000, rate=50)
    client = httpx.Client(timeout=0.5)

    def call() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            client.post(gateway.api + "/chat/completions", json=_body("long", False))

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    client.close()
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.5)
    wait_for(lambda: fake_engine.running == 0, within=1.0)  # the abort is counted a moment before the slot

"""The whole path for real: the openai SDK ─► gateway ─► vLLM (CPU build) ─► SmolLM2-135M-Instruct.

The gateway runs as `gateway up` wires it: in front of the supervised engine, with the engine's internal key,
the built-in issuer and a token for the demo client. The engine is the session's one (``engine_supervisor``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from engine import EngineSupervisor
from gateway.app import AppParts
from gateway.up import DEMO_CLIENT, demo_token
from tests.support.e2e import ENGINE_START_TIMEOUT_S, LoopThread, requests_running
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway
from tests.support.processes import wait_until_sync

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S + 300)]


@pytest.fixture(scope="module")
def engine_gateway(
    engine_supervisor: EngineSupervisor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningGateway, str]]:
    data = tmp_path_factory.mktemp("gateway-e2e")
    settings = gateway_settings(
        Path(data), engine_supervisor.base_url, auth="builtin", first_token_timeout=120.0, idle_timeout=60.0
    )
    parts = AppParts(supervisor=engine_supervisor, engine_api_key=engine_supervisor.api_key)
    with run_gateway(settings, parts) as gateway:
        yield gateway, demo_token(settings) or ""


@pytest.fixture
def sdk(engine_gateway: tuple[RunningGateway, str]) -> Iterator[openai.OpenAI]:
    gateway, token = engine_gateway
    with openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=120) as client:
        yield client


def test_greedy_answer_through_gateway(sdk: openai.OpenAI, engine_supervisor: EngineSupervisor) -> None:
    result = sdk.chat.completions.create(
        model=engine_supervisor.served_model_name,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in (result.choices[0].message.content or "")
    assert result.usage is not None
    assert 0 < result.usage.completion_tokens <= 30


def test_streamed_chat_and_usage(sdk: openai.OpenAI, engine_supervisor: EngineSupervisor) -> None:
    prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]
    model = engine_supervisor.served_model_name
    chunks = list(
        sdk.chat.completions.create(
            model=model,
            messages=prompt,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The same prompt, not streamed, is tokenised the same way by the engine.
    full = sdk.chat.completions.create(model=model, messages=prompt, temperature=0, max_tokens=24)
    assert full.usage is not None
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert (full.choices[0].message.content or "") == text


def test_disconnect_through_gateway_aborts_in_vllm(
    engine_gateway: tuple[RunningGateway, str], engine_supervisor: EngineSupervisor
) -> None:
    gateway, token = engine_gateway
    body = {
        "model": engine_supervisor.served_model_name,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
        "max_tokens": 1000,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", gateway.api + "/chat/completions", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert requests_running(engine_supervisor) >= 1
    closed = time.monotonic()
    assert wait_until_sync(lambda: requests_running(engine_supervisor) == 0, 2.0)
    assert time.monotonic() - closed < 2.0


def test_demo_token_is_for_the_demo_client(engine_gateway: tuple[RunningGateway, str]) -> None:
    gateway, token = engine_gateway
    models = httpx.get(gateway.api + "/models", headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert models.status_code == 200
    assert models.json()["data"][0]["id"] == "smollm2-135m-instruct"
    assert httpx.get(gateway.api + "/models", timeout=30).status_code == 401
    assert DEMO_CLIENT == "demo-app"


def test_readyz_reports_the_engine(engine_gateway: tuple[RunningGateway, str]) -> None:
    gateway, _ = engine_gateway
    ready = httpx.get(gateway.url + "/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["engine"]["up"] is True


def test_killed_engine_shows_in_readyz_until_restarted(
    engine_gateway: tuple[RunningGateway, str], engine_supervisor: EngineSupervisor, engine_runner: LoopThread
) -> None:
    gateway, token = engine_gateway
    sup = engine_supervisor
    pid, restarts, url, key = sup.pid, sup.restarts, sup.base_url, sup.api_key
    assert pid is not None
    assert sup.up
    os.kill(pid, signal.SIGKILL)
    try:
        assert wait_until_sync(lambda: not sup.up, 10)
        down = httpx.get(gateway.url + "/readyz", timeout=10)
        assert down.status_code == 503
        assert down.json()["status"] == "not_ready"
        assert down.json()["reasons"][0].startswith("engine down")
        # A call while the engine is down is refused cleanly, never a 500.
        refused = httpx.post(
            gateway.api + "/chat/completions",
            json={"model": sup.served_model_name, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert refused.status_code in (502, 503)
        assert "error" in refused.json()
        assert sup.reason is not None
    finally:
        # Later tests share this engine: always wait for the restart.
        engine_runner.run(sup.wait_ready(ENGINE_START_TIMEOUT_S))
    assert wait_until_sync(lambda: httpx.get(gateway.url + "/readyz", timeout=10).status_code == 200, 30)
    assert sup.restarts == restarts + 1
    assert sup.last_exit == -signal.SIGKILL
    assert sup.pid not in (None, pid)
    # Same port and key: the gateway's engine client needs no change.
    assert (sup.base_url, sup.api_key) == (url, key)
    with openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=120) as client:
        test_greedy_answer_through_gateway(client, sup)

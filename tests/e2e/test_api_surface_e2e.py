"""The API internal apps use, for real: the openai SDK ─► gateway ─► vLLM on CPU, chat and embedding engines.

JSON output through vLLM's structured outputs, a required tool call relayed as the engine emitted it, embeddings that place related sentences closer, and `/v1/models` listing both engines'
models. The engines are the session's (``engine_supervisor``, ``embeddings_supervisor``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engine import EngineSupervisor
from gateway.app import AppParts
from gateway.up import demo_token
from tests.support.e2e import ENGINE_START_TIMEOUT_S
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S + 300)]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Every sampling field set, so the gateway adds none of the policy's defaults and both paths sample alike.
GREEDY: dict[str, Any] = {
    "temperature": 0,
    "top_p": 1.0,
    "top_k": -1,
    "min_p": 0.0,
    "presence_penalty": 0.0,
    "seed": 7,
}
SDK_FIELDS = ("temperature", "top_p", "presence_penalty", "seed")  # the rest go as extra_body


def _sdk_args(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as openai SDK arguments: vLLM's own sampling fields through ``extra_body``."""
    extra = {k: v for k, v in body.items() if k in GREEDY and k not in SDK_FIELDS}
    return {**{k: v for k, v in body.items() if k not in extra}, "extra_body": extra}


@pytest.fixture(scope="module")
def api(
    engine_supervisor: EngineSupervisor,
    embeddings_supervisor: EngineSupervisor,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningGateway, str]]:
    data = tmp_path_factory.mktemp("gateway-api-e2e")
    settings = gateway_settings(
        Path(data), engine_supervisor.base_url, auth="builtin", first_token_timeout=120.0, idle_timeout=60.0
    )
    parts = AppParts(
        supervisor=engine_supervisor,
        engine_api_key=engine_supervisor.api_key,
        supervisors=(engine_supervisor, embeddings_supervisor),
    )
    with run_gateway(settings, parts) as gateway:
        yield gateway, demo_token(settings) or ""


@pytest.fixture
def sdk(api: tuple[RunningGateway, str]) -> Iterator[openai.OpenAI]:
    gateway, token = api
    with openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=120) as client:
        yield client


def test_json_schema_answer_validates(sdk: openai.OpenAI, engine_supervisor: EngineSupervisor) -> None:
    schema = {
        "type": "object",
        "properties": {"days": {"type": "integer"}},
        "required": ["days"],
        "additionalProperties": False,
    }
    result = sdk.chat.completions.create(
        model=engine_supervisor.served_model_name,
        messages=[{"role": "user", "content": "How many days of annual leave do staff get? Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "leave", "schema": schema, "strict": True},
        },
        max_tokens=40,
        **_sdk_args(GREEDY),
    )
    answer = json.loads(result.choices[0].message.content or "")
    assert set(answer) == {"days"}
    assert isinstance(answer["days"], int)


def _direct_tool_call(sup: EngineSupervisor, body: dict[str, Any]) -> tuple[str, str, str | None]:
    """The engine's own streamed answer, reassembled: (function name, arguments, finish reason)."""
    name, arguments, finish = "", [], None
    headers = {"Authorization": f"Bearer {sup.api_key}"}
    with (
        httpx.Client(base_url=sup.base_url, headers=headers, timeout=120, trust_env=False) as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                for call in choice.get("delta", {}).get("tool_calls") or []:
                    fn = call.get("function") or {}
                    name = fn.get("name") or name
                    arguments.append(fn.get("arguments") or "")
                finish = choice.get("finish_reason") or finish
    return name, "".join(arguments), finish


def _gateway_tool_call(sdk: openai.OpenAI, body: dict[str, Any]) -> tuple[str, str, str | None, Any]:
    name, arguments, finish, extension = "", [], None, None
    for chunk in sdk.chat.completions.create(**_sdk_args(body), stream=True):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function is not None:
                    name = call.function.name or name
                    arguments.append(call.function.arguments or "")
            if choice.finish_reason:
                finish = choice.finish_reason
                extension = (chunk.model_extra or {}).get("menshen")
    return name, "".join(arguments), finish, extension


def test_required_tool_call_is_relayed_as_the_engine_emits_it(
    sdk: openai.OpenAI, engine_supervisor: EngineSupervisor
) -> None:
    body: dict[str, Any] = {
        "model": engine_supervisor.served_model_name,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "max_tokens": 60,
        **GREEDY,
    }
    direct_name, direct_args, _ = _direct_tool_call(engine_supervisor, body)
    name, args, finish, extension = _gateway_tool_call(sdk, body)
    assert direct_name == name == "get_weather"
    if extension is None:  # not cut by a guard: byte for byte what the engine sent
        assert args == direct_args
    else:  # cut: what was released is the engine's own beginning
        assert direct_args.startswith(args)
    assert finish is not None


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_related_sentences_embed_closer(sdk: openai.OpenAI, embeddings_supervisor: EngineSupervisor) -> None:
    result = sdk.embeddings.create(
        model=embeddings_supervisor.served_model_name,
        input=["annual leave days", "vacation days", "server rack"],
    )
    leave, vacation, rack = (item.embedding for item in result.data)
    assert len(leave) == 384
    assert _cosine(leave, vacation) > _cosine(leave, rack)
    assert result.usage.prompt_tokens > 0


def test_models_lists_both_engines(
    sdk: openai.OpenAI, engine_supervisor: EngineSupervisor, embeddings_supervisor: EngineSupervisor
) -> None:
    ids = {model.id for model in sdk.models.list()}
    assert {engine_supervisor.served_model_name, embeddings_supervisor.served_model_name} <= ids

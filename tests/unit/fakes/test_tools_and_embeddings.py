"""Tool calls, JSON output and embeddings: the fake's bytes are vLLM's, and the openai SDK reads them."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeEngine, Script, ToolCallPiece, wire
from tests.fakes.vectors import embed, to_base64
from tests.support.fakes import MODEL

WEATHER = ToolCallPiece("get_weather", ('{"city": ', '"Paris"}'))
CLOCK = ToolCallPiece("get_time", ("{}",))
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]
EMBED = "all-MiniLM-L6-v2"
ID_RE = re.compile(r"^chatcmpl-tool-[0-9a-f]{16}$")


def _events(resp: httpx.Response) -> list[Any]:
    assert resp.status_code == 200
    events = resp.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    return [json.loads(e[len("data: ") :]) for e in events[:-2]]


async def test_streamed_tool_calls_are_vllm_hermes_deltas(
    engine: FakeEngine, http: httpx.AsyncClient
) -> None:
    engine.default_script = Script.calling(WEATHER, CLOCK)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "stream": True}
    chunks = _events(await http.post("/v1/chat/completions", json=body))
    cid, created = chunks[0]["id"], chunks[0]["created"]
    ids = [c["choices"][0]["delta"]["tool_calls"][0].get("id") for c in chunks[1:-1]]
    first, second = ids[0], ids[3]
    assert first and second and first != second and ID_RE.match(first) and ID_RE.match(second)
    expected = [
        wire.chat_role_chunk(cid, created, MODEL),
        wire.chat_delta_chunk(cid, created, MODEL, wire.tool_call_start(0, first, "get_weather")),
        wire.chat_delta_chunk(cid, created, MODEL, wire.tool_call_arguments(0, '{"city": ')),
        wire.chat_delta_chunk(cid, created, MODEL, wire.tool_call_arguments(0, '"Paris"}')),
        wire.chat_delta_chunk(cid, created, MODEL, wire.tool_call_start(1, second, "get_time")),
        wire.chat_delta_chunk(cid, created, MODEL, wire.tool_call_arguments(1, "{}")),
        wire.chat_finish_chunk(cid, created, MODEL, {}, "tool_calls", None, wire.DEFAULT_SYSTEM_FINGERPRINT),
    ]
    assert chunks == expected
    start = chunks[1]["choices"][0]["delta"]
    assert start == {
        "content": None,
        "tool_calls": [{"id": first, "type": "function", "index": 0, "function": {"name": "get_weather"}}],
    }
    assert "arguments" not in start["tool_calls"][0]["function"]
    sent = engine.last_request.json
    assert sent["tools"] == TOOLS, "the fake records what reached it"


async def test_named_tool_choice_finishes_with_stop(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.calling(CLOCK)
    choice = {"type": "function", "function": {"name": "get_time"}}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": TOOLS,
        "tool_choice": choice,
    }
    for stream in (True, False):
        resp = await http.post("/v1/chat/completions", json={**body, "stream": stream})
        finish = _events(resp)[-1] if stream else resp.json()
        assert finish["choices"][0]["finish_reason"] == "stop"
    assert engine.last_request.json["tool_choice"] == choice


async def test_non_streamed_tool_calls(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.calling(WEATHER, CLOCK, content="Checking.")
    resp = await http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    choice = resp.json()["choices"][0]
    message = choice["message"]
    assert choice["finish_reason"] == "tool_calls"
    assert message["content"] == "Checking."
    assert list(message) == [
        "role",
        "content",
        "refusal",
        "annotations",
        "audio",
        "function_call",
        "tool_calls",
        "reasoning",
    ]
    assert [(c["type"], c["function"]) for c in message["tool_calls"]] == [
        ("function", {"name": "get_weather", "arguments": '{"city": "Paris"}'}),
        ("function", {"name": "get_time", "arguments": "{}"}),
    ]
    assert all(ID_RE.match(c["id"]) for c in message["tool_calls"])


async def test_sdk_reassembles_streamed_tool_calls(engine: FakeEngine, sdk: openai.AsyncOpenAI) -> None:
    engine.default_script = Script.calling(WEATHER, CLOCK)
    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,
        stream=True,  # type: ignore[arg-type]
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                if tc.function is not None:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    full = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert full.choices[0].message.content is None
    tool_calls = full.choices[0].message.tool_calls or []
    assert [json.loads(t.function.arguments) for t in tool_calls if t.type == "function"] == [
        {"city": "Paris"},
        {},
    ]


async def test_json_output_script_and_response_format_recorded(
    engine: FakeEngine, sdk: openai.AsyncOpenAI
) -> None:
    engine.default_script = Script.json({"days": 25, "carry_over": True})
    fmt = {"type": "json_schema", "json_schema": {"name": "leave", "schema": {"type": "object"}}}
    resp = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        response_format=fmt,  # type: ignore[arg-type]
    )
    assert json.loads(resp.choices[0].message.content or "") == {"days": 25, "carry_over": True}
    assert engine.last_request.json["response_format"] == fmt


@pytest.fixture
async def embedder() -> Any:
    async with FakeEngine(models=(), embedding_models=(EMBED,), embedding_dim=384) as fe:
        yield fe
    assert fe.errors == []


async def test_embeddings_float_and_base64_through_the_sdk(embedder: FakeEngine) -> None:
    async with openai.AsyncOpenAI(base_url=embedder.base_url, api_key="k", max_retries=0) as client:
        floats = await client.embeddings.create(
            model=EMBED, input=["annual leave", "server rack"], encoding_format="float"
        )
        b64 = await client.embeddings.create(
            model=EMBED, input=["annual leave", "server rack"], encoding_format="base64"
        )
        # without encoding_format the SDK asks for base64 and decodes it (little-endian float32) itself
        decoded = await client.embeddings.create(model=EMBED, input=["annual leave", "server rack"])
        small = await client.embeddings.create(model=EMBED, input="annual leave", dimensions=8)
        models = await client.models.list()
    assert embedder.requests[2].json["encoding_format"] == "base64"
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert [d.embedding for d in b64.data] == [to_base64(d.embedding) for d in floats.data]
    assert floats.data[0].embedding == embed("annual leave", 384)
    assert len(floats.data[0].embedding) == 384 and len(small.data[0].embedding) == 8
    assert abs(sum(x * x for x in small.data[0].embedding) - 1.0) < 1e-5
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == (2 + 2) + (2 + 2)
    assert [m.id for m in models.data] == [EMBED]


async def test_embeddings_wire_format(embedder: FakeEngine) -> None:
    async with httpx.AsyncClient(base_url=embedder.url) as http:
        resp = await http.post(
            "/v1/embeddings", json={"model": EMBED, "input": "hi", "encoding_format": "base64"}
        )
    body = resp.json()
    assert re.match(r"^embd-[0-9a-f]{16}$", body["id"])
    expected = wire.embedding_response(body["id"], body["created"], EMBED, [body["data"][0]["embedding"]], 3)
    assert resp.content == wire.encode(expected)
    assert list(body["data"][0]) == ["index", "object", "embedding"]


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/v1/embeddings", {"model": MODEL, "input": "x"}, 501, "The model does not support Embeddings API"),
        (
            "/v1/chat/completions",
            {"model": EMBED, "messages": []},
            501,
            "The model does not support Chat Completions API",
        ),
        (
            "/v1/embeddings",
            {"model": EMBED, "input": "x", "dimensions": 385},
            400,
            "only supports dimensions in range [1, 384], got 385",
        ),
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "does not exist"),
    ],
)
async def test_embedding_errors_in_vllm_shape(
    path: str, payload: dict[str, Any], status: int, message: str
) -> None:
    async with (
        FakeEngine(models=(MODEL,), embedding_models=(EMBED,)) as fe,
        httpx.AsyncClient(base_url=fe.url) as http,
    ):
        resp = await http.post(path, json=payload)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert message in error["message"] and error["code"] == status
    assert set(error) == {"message", "type", "param", "code"}
    if status == 501:
        assert error["type"] == "NotImplementedError"

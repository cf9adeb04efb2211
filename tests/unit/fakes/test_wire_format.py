"""The fake's bytes match vLLM 0.32's (see tests/fakes/wire.py for the source each fact comes from)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fakes import FakeEngine, Script, wire
from tests.fakes.script import chat_prompt_tokens
from tests.support.fakes import HELLO, MODEL

PROMPT_TOKENS = chat_prompt_tokens([{"role": "user", "content": "hi"}])


def _chat(stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


async def _events(
    http: httpx.AsyncClient, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> list[str]:
    resp = await http.post(path, json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["transfer-encoding"] == "chunked"
    text = resp.text
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e[len("data: ") :] for e in events[:-1]]


async def test_chat_stream_is_role_chunk_tokens_finish_usage_done(
    engine: FakeEngine, http: httpx.AsyncClient
) -> None:
    engine.default_script = Script.of(content=["Hel", "lo"], reasoning=["Think"])
    events = await _events(http, _chat(True, stream_options={"include_usage": True}))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    cid, created = chunks[0]["id"], chunks[0]["created"]
    assert cid.startswith("chatcmpl-")
    assert len(cid) == len("chatcmpl-") + 16
    assert all(c["id"] == cid and c["created"] == created and c["model"] == MODEL for c in chunks)
    expected = [
        wire.chat_role_chunk(cid, created, MODEL),
        wire.chat_delta_chunk(cid, created, MODEL, {"reasoning": "Think"}),
        wire.chat_delta_chunk(cid, created, MODEL, {"content": "Hel"}),
        wire.chat_delta_chunk(cid, created, MODEL, {"content": "lo"}),
        wire.chat_finish_chunk(cid, created, MODEL, {}, "stop", None, None),
        wire.chat_usage_chunk(
            cid, created, MODEL, wire.usage(PROMPT_TOKENS, 4, 1), wire.DEFAULT_SYSTEM_FINGERPRINT
        ),
    ]
    # byte equality: same keys, same order, same compact separators
    assert events[:-1] == [wire.encode(c).decode() for c in expected]
    assert events[0] == (
        f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":"{MODEL}",'
        '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],'
        '"prompt_token_ids":null,"prompt_text":null}'
    )
    assert chunks[-1]["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "total_tokens": PROMPT_TOKENS + 4,
        "completion_tokens": 4,
        "completion_tokens_details": {"reasoning_tokens": 1},
    }


async def test_without_usage_the_finish_chunk_carries_the_fingerprint(
    engine: FakeEngine, http: httpx.AsyncClient
) -> None:
    events = await _events(http, _chat(True))
    finish = json.loads(events[-2])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["system_fingerprint"] == wire.DEFAULT_SYSTEM_FINGERPRINT
    assert not any("usage" in json.loads(e) for e in events[:-1])


async def test_without_reasoning_parser_eos_delta_is_empty_content(
    engine: FakeEngine, http: httpx.AsyncClient
) -> None:
    engine.reasoning_parser = False
    engine.default_script = Script.of(content=["a"], reasoning=["r"])
    events = await _events(http, _chat(True, stream_options={"include_usage": True}))
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[1:-2]]
    assert deltas == [{"content": "r"}, {"content": "a"}, {"content": ""}]
    assert "completion_tokens_details" not in json.loads(events[-2])["usage"]


async def test_max_tokens_cuts_with_length_on_the_last_token(
    engine: FakeEngine, http: httpx.AsyncClient
) -> None:
    engine.default_script = Script.of(content=["a", "b", "c", "d"])
    events = await _events(http, _chat(True, max_tokens=2, stream_options={"include_usage": True}))
    last = json.loads(events[-3])["choices"][0]
    assert last["delta"] == {"content": "b"}
    assert last["finish_reason"] == "length"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 2


async def test_stop_string_finish_reports_stop_reason(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(content=["a", "b"], stop_reason="END")
    events = await _events(http, _chat(True))
    finish = json.loads(events[-2])["choices"][0]
    assert (finish["delta"], finish["finish_reason"], finish["stop_reason"]) == (
        {"content": "b"},
        "stop",
        "END",
    )


async def test_x_request_id_becomes_the_chunk_id(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json=_chat(True), headers={"x-request-id": "abc123"})
    assert json.loads(resp.text.split("\n\n")[0][6:])["id"] == "chatcmpl-abc123"


async def test_non_streamed_chat_body(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json=_chat(False))
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    expected = wire.chat_completion(
        body["id"],
        body["created"],
        MODEL,
        "Hello there, friend.",
        "The user greets me.",
        "stop",
        None,
        # one token a piece, plus the end-of-sequence token
        wire.usage(PROMPT_TOKENS, len(HELLO.pieces) + 1, len(HELLO.reasoning.split()), full=True),
        wire.DEFAULT_SYSTEM_FINGERPRINT,
    )
    assert resp.content == wire.encode(expected)
    assert "tool_calls" not in body["choices"][0]["message"]
    assert list(body["usage"]) == [
        "prompt_tokens",
        "total_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    ]


async def test_completions_stream_and_body(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(content=["x", "y"])
    body = {"model": MODEL, "prompt": "one two", "stream": True, "stream_options": {"include_usage": True}}
    events = await _events(http, body, "/v1/completions")
    chunks = [json.loads(e) for e in events[:-1]]
    cid, created = chunks[0]["id"], chunks[0]["created"]
    assert cid.startswith("cmpl-")
    expected = [
        wire.completion_chunk(cid, created, MODEL, "x"),
        wire.completion_chunk(cid, created, MODEL, "y"),
        wire.completion_chunk(cid, created, MODEL, "", "stop"),
        wire.completion_usage_chunk(cid, created, MODEL, wire.usage(2, 3), wire.DEFAULT_SYSTEM_FINGERPRINT),
    ]
    assert events[:-1] == [wire.encode(c).decode() for c in expected]

    resp = await http.post("/v1/completions", json={"model": MODEL, "prompt": "one two"})
    full = resp.json()
    assert full["object"] == "text_completion"
    assert full["choices"][0]["text"] == "xy"
    assert full["usage"] == {
        "prompt_tokens": 2,
        "total_tokens": 5,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


async def test_models_health_metrics(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert (card["id"], card["object"], card["owned_by"], card["root"]) == (MODEL, "model", "vllm", MODEL)
    assert card["max_model_len"] == engine.max_model_len
    assert card["permission"][0]["object"] == "model_permission"
    health = await http.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    await http.post("/v1/chat/completions", json=_chat(False))
    metrics = (await http.get("/metrics")).text
    assert f'vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 0.0' in metrics
    assert (
        f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="{MODEL}"}} 1.0' in metrics
    )


def test_stream_error_event_uses_json_dumps_spacing() -> None:
    event = wire.stream_error_event()
    assert event == (
        b'data: {"error": {"message": "Internal server error", "type": "InternalServerError", '
        b'"param": null, "code": 500}}\n\n'
    )

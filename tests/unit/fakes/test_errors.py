"""Injected and protocol errors come back in vLLM's shapes and statuses."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import FakeEngine, Script, wire
from tests.support.fakes import MODEL

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": MODEL, "messages": MESSAGES}


@pytest.mark.parametrize("status", [400, 500, 503])
async def test_http_status_before_streaming(engine: FakeEngine, http: httpx.AsyncClient, status: int) -> None:
    engine.default_script = Script.http_error(status, "nope")
    resp = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "error": {"message": "nope", "type": wire.ERROR_TYPES[status], "param": None, "code": status}
    }


async def test_sdk_sees_injected_status(engine: FakeEngine, sdk: openai.AsyncOpenAI) -> None:
    engine.default_script = Script.http_error(503, "busy")
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.body == {
        "message": "busy",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }


async def test_api_key_enforced_on_v1_only(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.api_key = "internal-key"
    missing = await http.post("/v1/chat/completions", json=CHAT)
    wrong = await http.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer other"})
    basic = await http.get("/v1/models", headers={"authorization": "Basic internal-key"})
    good = await http.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer internal-key"}
    )
    health = await http.get("/health")
    assert [r.status_code for r in (missing, wrong, basic, good, health)] == [401, 401, 401, 200, 200]
    assert missing.content == b'{"error":"Unauthorized"}'
    assert engine.last_request.headers["authorization"] == "Bearer internal-key"


async def test_unknown_model_is_404_naming_the_aliases(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4"})
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("NotFoundError", "model", 404)
    assert MODEL in err["message"]


@pytest.mark.parametrize(
    ("content", "headers", "param"),
    [
        (b"{not json", {"content-type": "application/json"}, "body"),
        (b'{"model": "x"}', {"content-type": "application/json"}, "body.messages"),
        (json.dumps(CHAT).encode(), {"content-type": "text/plain"}, None),
    ],
)
async def test_bad_requests_are_400(
    http: httpx.AsyncClient, content: bytes, headers: dict[str, str], param: str | None
) -> None:
    resp = await http.post("/v1/chat/completions", content=content, headers=headers)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("Bad Request", 400, param)


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/nothing")).status_code == 404
    assert (await http.get("/v1/chat/completions")).status_code == 405


async def test_mid_stream_error_event_then_done(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["a", "b", "c"], error_after=2)
    resp = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = resp.text.split("\n\n")[:-1]
    assert [json.loads(e[6:])["choices"][0]["delta"] for e in events[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
        {"content": "b"},
    ]
    assert (events[3] + "\n\n").encode() == wire.stream_error_event()
    assert events[4] == "data: [DONE]"


async def test_sdk_raises_on_mid_stream_error(engine: FakeEngine, sdk: openai.AsyncOpenAI) -> None:
    engine.default_script = Script.of(["a", "b"], error_after=1)
    stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    seen: list[str] = []

    async def drain() -> None:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="Internal server error"):
        await drain()
    assert "".join(seen) == "a"


async def test_non_streamed_error_after_is_500(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["a"], error_after=0)
    resp = await http.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "InternalServerError"


async def test_abrupt_close_mid_stream(engine: FakeEngine, http: httpx.AsyncClient) -> None:
    engine.default_script = Script.of(["a", "b", "c"], close_after=2)
    received: list[bytes] = []

    async def read() -> None:
        async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            async for data in resp.aiter_bytes():
                received.append(data)

    with pytest.raises(httpx.RemoteProtocolError):
        await read()
    assert b'"content":"b"' in b"".join(received)
    assert b"[DONE]" not in b"".join(received)
    assert engine.aborted_total == 0  # the engine hung up, not the client

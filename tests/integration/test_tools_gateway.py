"""Tool calls and JSON output through the running gateway, with the openai SDK, raw SSE and the fake engine.

The engine's tool calls reach the client as vLLM sends them and reassemble into what the engine wrote; their
arguments are output, scanned like content (a block ends the stream, nothing of the word leaks); loops in
arguments and too many calls are cut; the policy bounds tools and schemas, and may refuse tools to a client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.protocol import LOGPROBS_REFUSED
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script, ToolCallPiece
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway

MODEL = "qwen3-8b"
CODENAME = "project nightjar"  # policies/default/lists/codenames.txt, rule words.codenames (block)
WEATHER_ARGS = '{"city": "Paris", "unit": "celsius"}'


def _tool(
    name: str, description: str = "A tool.", parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    schema = parameters or {"type": "object", "properties": {"city": {"type": "string"}}}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


TOOLS = [_tool("get_weather"), _tool("get_time")]


def _messages(fake: FakeEngine, name: str, script: Script) -> list[Any]:
    fake.scripts[name] = script
    return [{"role": "user", "content": f"[[script:{name}]] what is the weather in Paris?"}]


def _weather(*fragments: str) -> ToolCallPiece:
    return ToolCallPiece(
        "get_weather", fragments or (WEATHER_ARGS[:9], WEATHER_ARGS[9:20], WEATHER_ARGS[20:])
    )


def _stream(client: openai.OpenAI, messages: list[Any], **kwargs: Any) -> tuple[dict[int, list[str]], Any]:
    """Per call index [id, name, arguments] as the SDK's chunks carry them, and the one finishing chunk."""
    calls: dict[int, list[str]] = {}
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, stream=True, **kwargs)
    )
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, ["", "", ""])
            call[0] += delta.id or ""
            if delta.function is not None:
                call[1] += delta.function.name or ""
                call[2] += delta.function.arguments or ""
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(final) == 1 and chunks[-1] is final[0], "exactly one finish, and nothing after it"
    return calls, final[0]


def _ext(chunk: Any) -> Any:
    return (chunk.model_extra or {}).get("menshen")


def _error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = exc.value.response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def limited(fake_engine: FakeEngine, tmp_path: Path) -> Iterator[tuple[RunningGateway, openai.OpenAI]]:
    """The gateway under a bundle that limits the anonymous client to ``hr_*`` tools, with small schema bounds."""
    target = tmp_path / "bundle"
    target.mkdir()
    for path in DEFAULT_POLICIES.rglob("*"):
        if path.is_file():
            dest = target / path.relative_to(DEFAULT_POLICIES)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    clients = yaml.safe_load((target / "clients.yaml").read_text(encoding="utf-8"))
    clients["clients"]["anonymous"] = {"tier": "standard", "tools": ["hr_*"]}
    (target / "clients.yaml").write_text(yaml.safe_dump(clients), encoding="utf-8")
    generation = yaml.safe_load((target / "generation.yaml").read_text(encoding="utf-8"))
    generation.update(max_tools=3, max_tool_schema_bytes=2048, max_schema_depth=6, max_tool_calls=2)
    (target / "generation.yaml").write_text(yaml.safe_dump(generation), encoding="utf-8")
    settings = gateway_settings(tmp_path / "data", fake_engine.url, policies=target)
    with (
        run_gateway(settings) as running,
        openai.OpenAI(base_url=running.api, api_key="unused", max_retries=0, timeout=20) as sdk,
    ):
        yield running, sdk


# --- responses ----------------------------------------------------------------------------------------------


def test_streamed_tool_calls_reassemble_into_what_the_engine_sent(
    fake_engine: FakeEngine, client: openai.OpenAI
) -> None:
    script = Script.calling(_weather(), ToolCallPiece("get_time", ('{"tz": ', '"CET"}')))
    calls, final = _stream(client, _messages(fake_engine, "two", script))
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c[1], json.loads(c[2])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert all(c[0].startswith("chatcmpl-tool-") for c in calls.values())
    assert [t["function"]["name"] for t in fake_engine.last_request.json["tools"]] == [
        "get_weather",
        "get_time",
    ]


def test_non_streamed_tool_calls(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    messages = _messages(fake_engine, "one", Script.calling(_weather()))
    result = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", WEATHER_ARGS)
    ]
    assert calls[0].id.startswith("chatcmpl-tool-")


def test_a_blocked_word_in_streamed_arguments_never_leaks(
    fake_engine: FakeEngine, gateway: RunningGateway
) -> None:
    """The codename arrives one character a chunk inside the arguments; the raw SSE bytes never carry it."""
    args = json.dumps({"query": f"status of {CODENAME} this week"})
    messages = _messages(fake_engine, "leak", Script.calling(ToolCallPiece("search", tuple(args))))
    body = {"model": MODEL, "messages": messages, "tools": [_tool("search")], "stream": True}
    with httpx.stream("POST", gateway.api + "/chat/completions", json=body, timeout=20) as response:
        assert response.status_code == 200
        raw = b"".join(response.iter_bytes())
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    released = "".join(
        tc["function"].get("arguments") or ""
        for e in events
        if e["choices"]
        for tc in e["choices"][0]["delta"].get("tool_calls") or []
        if "function" in tc
    )
    assert released == args[: args.index(CODENAME)]
    finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert [e["choices"][0]["finish_reason"] for e in finals] == ["content_filter"]
    assert finals[0]["menshen"] == {"stopped": "content_filter", "rule": "words.codenames"}
    for piece in ("nightjar", "project n", "proj"):
        assert piece.encode() not in raw


def test_a_tool_result_with_a_blocked_word_is_refused(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "What is new?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"The {CODENAME} report is ready."},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    error = _error(info)
    assert error["code"] == "content_filter" and error["param"] == "messages[2].content"
    assert "nightjar" not in json.dumps(error)
    assert not [r for r in fake_engine.requests if r.path != "/v1/models"], "only model-list reads"


def test_response_format_reaches_the_engine(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    messages = _messages(fake_engine, "json", Script.json({"city": "Paris"}))
    result = client.chat.completions.create(model=MODEL, messages=messages, response_format=fmt)
    assert json.loads(result.choices[0].message.content or "") == {"city": "Paris"}
    assert fake_engine.last_request.json["response_format"] == fmt
    client.chat.completions.create(model=MODEL, messages=messages, response_format={"type": "json_object"})
    assert fake_engine.last_request.json["response_format"] == {"type": "json_object"}


def test_a_mask_rule_in_a_json_answer_acts_as_a_block(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    messages = _messages(fake_engine, "mail", Script.json({"to": "jane.doe@example.com"}))
    result = client.chat.completions.create(
        model=MODEL, messages=messages, response_format={"type": "json_object"}
    )
    assert result.choices[0].finish_reason == "content_filter"
    assert "jane" not in (result.choices[0].message.content or "")
    plain = client.chat.completions.create(model=MODEL, messages=messages)
    assert plain.choices[0].finish_reason == "stop" and "*" in (plain.choices[0].message.content or "")


@pytest.mark.parametrize("field", [{"logprobs": True}, {"top_logprobs": 3}])
def test_logprobs_are_refused_with_the_reason(client: openai.OpenAI, field: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **field)
    assert LOGPROBS_REFUSED in _error(info)["message"]


# --- loops and the call cap -----------------------------------------------------------------------------


def test_looping_arguments_are_cut(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    """SmolLM2 on CPU loops inside arguments ("bella_bella_…") until max_tokens: the loop check cuts it."""
    loop = ToolCallPiece("get_weather", ('{"city": "', *(["bella_"] * 400)))
    calls, final = _stream(client, _messages(fake_engine, "bella", Script.calling(loop)))
    assert final.choices[0].finish_reason == "length"
    ext = _ext(final)
    assert (ext["stopped"], ext["where"]) == ("repetition_loop", "tool_arguments")
    assert calls[0][2].count("bella_") < 40


def test_too_many_tool_calls_are_cut(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    script = Script.calling(*[ToolCallPiece("get_time", ("{}",))] * 17)
    calls, final = _stream(client, _messages(fake_engine, "many", script))
    assert len(calls) == 16
    assert final.choices[0].finish_reason == "length"
    assert _ext(final) == {"stopped": "tool_call_limit", "rule": "generation.max_tool_calls", "limit": 16}


# --- policy bounds and grants ---------------------------------------------------------------------------


def test_tools_outside_the_clients_globs_are_forbidden(
    fake_engine: FakeEngine, limited: tuple[RunningGateway, openai.OpenAI]
) -> None:
    _, sdk = limited
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.PermissionDeniedError) as info:
        sdk.chat.completions.create(
            model=MODEL, messages=messages, tools=[_tool("hr_lookup"), _tool("shell")]
        )
    error = _error(info)
    assert error["type"] == "permission_error" and "'shell'" in error["message"]
    assert not [r for r in fake_engine.requests if r.path != "/v1/models"], "only model-list reads"
    fake_engine.scripts["ok"] = Script.of("fine")
    sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[script:ok]] hi"}], tools=[_tool("hr_lookup")]
    )


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([_tool(f"hr_{i}") for i in range(4)], "tools"),
        ([_tool("hr_big", "x" * 3000)], "tools"),
        ([_tool("hr_deep", parameters={"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}})], "tools"),
    ],
    ids=["count", "bytes", "depth"],
)
def test_tool_bounds_are_400(
    fake_engine: FakeEngine, limited: tuple[RunningGateway, openai.OpenAI], tools: list[Any], param: str
) -> None:
    _, sdk = limited
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=tools)
    error = _error(info)
    assert (error["code"], error["param"]) == ("tools_limit", param)
    assert not [r for r in fake_engine.requests if r.path != "/v1/models"], "only model-list reads"


def test_a_large_response_schema_is_400(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    schema = {"type": "object", "description": "x" * 70000}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format=fmt
        )
    assert (_error(info)["code"], _error(info)["param"]) == ("tools_limit", "response_format")


def test_a_mask_inside_history_arguments_stays_in_the_string(
    fake_engine: FakeEngine, client: openai.OpenAI
) -> None:
    """The e-mail rule masks inside a JSON string value of a past call's arguments; the engine gets valid JSON."""
    fake_engine.scripts["hist"] = Script.of("Sent.")
    arguments = json.dumps({"to": "jane.doe@example.com", "n": 1})
    call = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": arguments}}
    messages: list[Any] = [
        {"role": "user", "content": "[[script:hist]] mail Jane"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ]
    client.chat.completions.create(model=MODEL, messages=messages, tools=[_tool("send")])
    sent = fake_engine.last_request.json["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"to": "*" * len("jane.doe@example.com"), "n": 1}


def test_a_non_streamed_answer_cut_inside_a_call_drops_that_call(
    fake_engine: FakeEngine, client: openai.OpenAI
) -> None:
    leak = ToolCallPiece("search", tuple(json.dumps({"query": f"{CODENAME} status"})))
    messages = _messages(fake_engine, "cut", Script.calling(_weather(), leak))
    result = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = result.choices[0]
    assert choice.finish_reason == "content_filter"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", WEATHER_ARGS)]
    assert "nightjar" not in result.model_dump_json()

"""Tool calling and structured output: every accepted form round-trips, every malformed one is refused."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GuardText,
    SchemaFootprint,
    apply_guard_texts,
    decode_request,
    guard_texts,
    json_depth,
)

USER = {"role": "user", "content": "hi"}
PARAMS = {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather", "parameters": PARAMS},
}
CALL = {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen3-8b", "messages": [USER], **fields}


def decode_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    request = decode_request(msgspec.json.encode(body), ChatCompletionRequest)
    assert isinstance(request, ChatCompletionRequest)
    return request


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("one tool", {"tools": [WEATHER]}),
    ("no tools", {"tools": []}),
    ("tools null", {"tools": None}),
    ("name only", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("name of 64", {"tools": [{"type": "function", "function": {"name": "a" * 64}}]}),
    ("name with - and _", {"tools": [{"type": "function", "function": {"name": "A-b_9"}}]}),
    (
        "strict",
        {"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {}}}]},
    ),
    ("strict null", {"tools": [{"type": "function", "function": {"name": "f", "strict": None}}]}),
    ("128 tools", {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)]}),
    *[(f"tool_choice {c}", {"tools": [WEATHER], "tool_choice": c}) for c in ("none", "auto", "required")],
    ("tool_choice none without tools", {"tool_choice": "none"}),
    ("tool_choice null", {"tool_choice": None}),
    (
        "named tool_choice",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    ("parallel_tool_calls", {"tools": [WEATHER], "parallel_tool_calls": False}),
    (
        "assistant tool call",
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}]},
    ),
    (
        "assistant text and call",
        {"messages": [USER, {"role": "assistant", "content": "Let me see.", "tool_calls": [CALL]}]},
    ),
    ("parallel calls", {"messages": [{"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "c2"}]}]}),
    ("tool result", {"messages": [{"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "Sunny"}]}),
    (
        "tool result parts",
        {"messages": [{"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "a"}]}]},
    ),
    ("tool result empty", {"messages": [{"role": "tool", "tool_call_id": "c", "content": ""}]}),
    ("response_format text", {"response_format": {"type": "text"}}),
    ("response_format json_object", {"response_format": {"type": "json_object"}}),
    ("response_format null", {"response_format": None}),
    (
        "response_format json_schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "days", "schema": PARAMS, "strict": True, "description": "d"},
            }
        },
    ),
    ("json_schema name only", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
]


@pytest.mark.parametrize(("case", "fields"), ACCEPTED)
def test_accepted_and_round_tripped(case: str, fields: dict[str, Any]) -> None:
    body = chat(**fields)
    assert msgspec.to_builtins(decode_chat(body)) == _without_null_content(body)


def _without_null_content(body: dict[str, Any]) -> dict[str, Any]:
    # an absent and a null content mean the same upstream; the null is omitted on re-encoding
    messages = [{k: v for k, v in m.items() if not (k == "content" and v is None)} for m in body["messages"]]
    return {**body, "messages": messages}


def _tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": function}


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("tool without type", {"tools": [{"function": {"name": "f"}}]}, "missing required field `type`"),
    (
        "tool type other",
        {"tools": [{"type": "code_interpreter", "function": {"name": "f"}}]},
        "Invalid enum value",
    ),
    ("tool without function", {"tools": [{"type": "function"}]}, "missing required field `function`"),
    ("name missing", {"tools": [_tool(description="d")]}, "missing required field `name`"),
    ("name empty", {"tools": [_tool(name="")]}, "regex"),
    ("name of 65", {"tools": [_tool(name="a" * 65)]}, "regex"),
    ("name with space", {"tools": [_tool(name="get weather")]}, "regex"),
    ("name with dot", {"tools": [_tool(name="a.b")]}, "regex"),
    ("parameters a list", {"tools": [_tool(name="f", parameters=[])]}, "Expected `object`"),
    ("parameters a string", {"tools": [_tool(name="f", parameters="{}")]}, "Expected `object`"),
    ("description a number", {"tools": [_tool(name="f", description=1)]}, "Expected `str`"),
    ("unknown key in function", {"tools": [_tool(name="f", examples=[])]}, "unknown field `examples`"),
    ("unknown key in tool", {"tools": [{**WEATHER, "cache": True}]}, "unknown field `cache`"),
    ("129 tools", {"tools": [_tool(name=f"f{i}") for i in range(129)]}, "length <= 128"),
    ("duplicate names", {"tools": [WEATHER, WEATHER]}, "tool names must be unique"),
    ("tool_choice unknown string", {"tools": [WEATHER], "tool_choice": "any"}, "Invalid enum value"),
    ("tool_choice auto without tools", {"tool_choice": "auto"}, "`tool_choice` needs `tools`"),
    ("tool_choice required, tools empty", {"tools": [], "tool_choice": "required"}, "needs `tools`"),
    (
        "named tool_choice not in tools",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        "not in `tools`",
    ),
    (
        "named tool_choice without type",
        {"tools": [WEATHER], "tool_choice": {"function": {"name": "get_weather"}}},
        "type",
    ),
    ("parallel_tool_calls a string", {"parallel_tool_calls": "yes"}, "Expected `bool"),
    (
        "tool_calls on user",
        {"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]},
        "only assistant",
    ),
    (
        "tool_call_id on user",
        {"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]},
        "only tool messages",
    ),
    ("tool without id", {"messages": [{"role": "tool", "content": "x"}]}, "needs the `tool_call_id`"),
    (
        "tool with empty id",
        {"messages": [{"role": "tool", "content": "x", "tool_call_id": ""}]},
        "length >= 1",
    ),
    ("tool without content", {"messages": [{"role": "tool", "tool_call_id": "c"}]}, "needs `content`"),
    (
        "call without id",
        {"messages": [{"role": "assistant", "tool_calls": [{k: v for k, v in CALL.items() if k != "id"}]}]},
        "`id`",
    ),
    (
        "call arguments an object",
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}
            ]
        },
        "Expected `str`",
    ),
    (
        "call with a bad name",
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "a b", "arguments": "{}"}}],
                }
            ]
        },
        "regex",
    ),
    (
        "call with a token_ids field",
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "index": 0}]}]},
        "unknown field `index`",
    ),
    ("response_format unknown type", {"response_format": {"type": "grammar"}}, "Invalid value 'grammar'"),
    ("response_format without type", {"response_format": {}}, "missing required field `type`"),
    (
        "json_schema missing",
        {"response_format": {"type": "json_schema"}},
        "missing required field `json_schema`",
    ),
    (
        "json_schema without name",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "`name`",
    ),
    (
        "json_schema schema a list",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": []}}},
        "Expected `object`",
    ),
    (
        "json_schema unknown key",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "regex": "a"}}},
        "unknown field `regex`",
    ),
    (
        "json_object with a schema",
        {"response_format": {"type": "json_object", "schema": {}}},
        "unknown field `schema`",
    ),
]


@pytest.mark.parametrize(("case", "fields", "message"), REJECTED)
def test_rejected_with_a_clear_message(case: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        decode_chat(chat(**fields))


def test_message_rules_name_the_message() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"at `\$\.messages\[1\]`"):
        decode_chat(chat(messages=[USER, {"role": "tool", "content": "x"}]))


FULL = chat(
    messages=[
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                CALL,
                {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "Sunny, 21 C"},
    ],
    tools=[WEATHER, {"type": "function", "function": {"name": "bare"}}],
    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
)


def test_guard_texts_list_every_text_with_where_it_sits() -> None:
    assert guard_texts(decode_chat(FULL)) == [
        GuardText("message", "messages[0].content", "Be brief."),
        GuardText("message", "messages[1].content[0]", "Weather"),
        GuardText("message", "messages[1].content[1]", "in Paris?"),
        GuardText("tool_call_arguments", "messages[2].tool_calls[0].function.arguments", "{}"),
        GuardText("tool_call_arguments", "messages[2].tool_calls[1].function.arguments", '{"city":"Paris"}'),
        GuardText("tool_result", "messages[3].content", "Sunny, 21 C"),
        GuardText("tool_description", "tools[0].function.description", "Current weather"),
        GuardText("tool_parameters", "tools[0].function.parameters", msgspec.json.encode(PARAMS).decode()),
    ]


def test_masked_texts_go_back_where_they_came_from() -> None:
    request = decode_chat(FULL)
    texts = [t.text.replace("Paris", "[MASKED]").replace("City", "[MASKED]") for t in guard_texts(request)]
    apply_guard_texts(request, texts)
    sent = msgspec.to_builtins(request)
    assert sent["messages"][1]["content"][1] == {"type": "text", "text": "in [MASKED]?"}
    assert sent["messages"][2]["tool_calls"][1]["function"]["arguments"] == '{"city":"[MASKED]"}'
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"]["description"] == "[MASKED] name"
    assert "Paris" not in msgspec.json.encode(request).decode()
    assert [t.text for t in guard_texts(request)] == texts


def test_a_mask_that_breaks_a_schema_is_an_error() -> None:
    request = decode_chat(FULL)
    texts = [t.text for t in guard_texts(request)]
    texts[-1] = "[MASKED]"
    with pytest.raises(ValueError, match="no longer a JSON object"):
        apply_guard_texts(request, texts)


def test_apply_needs_one_text_per_slot() -> None:
    with pytest.raises(ValueError, match="expected 8 texts, got 1"):
        apply_guard_texts(decode_chat(FULL), ["x"])


def test_completion_prompt_is_one_guard_text() -> None:
    for prompt in ("Once", ["Once"]):
        request = decode_request(msgspec.json.encode({"model": "m", "prompt": prompt}), CompletionRequest)
        assert guard_texts(request) == [GuardText("prompt", "prompt", "Once")]
        apply_guard_texts(request, ["[MASKED]"])
        assert msgspec.to_builtins(request)["prompt"] == (
            "[MASKED]" if isinstance(prompt, str) else ["[MASKED]"]
        )


def test_prompt_text_counts_what_tools_add_to_the_prompt() -> None:
    texts = decode_chat(FULL).prompt_text()
    assert texts[:4] == ["Be brief.", "Weather\nin Paris?", "", "Sunny, 21 C"]
    assert texts[4:6] == ["{}", '{"city":"Paris"}']
    assert "get_weather" in texts[6] and "bare" in texts[6]
    assert decode_chat(chat()).prompt_text() == ["hi"]


def test_schema_footprint() -> None:
    request = decode_chat(FULL)
    tools = msgspec.to_builtins(request)["tools"]
    assert request.schema_footprint() == SchemaFootprint(
        tools_bytes=len(msgspec.json.encode(tools)),
        tools_depth=3,
        response_schema_bytes=len(b'{"type":"object"}'),
        response_schema_depth=1,
    )
    assert decode_chat(chat()).schema_footprint() == SchemaFootprint()


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("s", 0), ({}, 1), ([], 1), ({"a": [1]}, 2), ({"a": {"b": {"c": [[]]}}}, 5), ([{}, [[[]]]], 4)],
)
def test_json_depth(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_is_not_recursive() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(5000):
        child: list[object] = []
        node.append(child)
        node = child
    assert json_depth(deep) == 5001

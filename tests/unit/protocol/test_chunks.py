"""Engine chunks decode from vLLM's exact wire format; client chunks re-encode only OpenAI fields."""

from __future__ import annotations

import msgspec
import pytest

from gateway.protocol import (
    ModelCard,
    ModelList,
    OutChatChoice,
    OutChatFullChoice,
    OutChunk,
    OutCompletion,
    OutDelta,
    OutFunctionDelta,
    OutMessage,
    OutTextChoice,
    OutToolCallDelta,
    ToolCallAssembler,
    UpChunk,
    UpDelta,
    UpModelList,
    Usage,
)
from tests.fakes import wire

decode = msgspec.json.Decoder(UpChunk).decode


def test_role_chunk_decodes_and_drops_vllm_fields() -> None:
    chunk = decode(wire.encode(wire.chat_role_chunk("chatcmpl-1", 1700, "m")))
    assert (chunk.id, chunk.created, chunk.model) == ("chatcmpl-1", 1700, "m")
    assert chunk.choices[0].delta is not None
    assert chunk.choices[0].delta.role == "assistant"
    assert chunk.choices[0].delta.content == ""
    assert chunk.usage is None
    assert chunk.error is None


def test_finish_chunk_and_usage_chunk() -> None:
    finish = decode(wire.encode(wire.chat_finish_chunk("c", 1, "m", {}, "length", None, "fp")))
    assert finish.choices[0].finish_reason == "length"
    usage = decode(wire.encode(wire.chat_usage_chunk("c", 1, "m", wire.usage(5, 7, 3), "fp")))
    assert usage.choices == []
    assert usage.usage == Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12)


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_under_either_name(field: str) -> None:
    chunk = decode(wire.encode(wire.chat_delta_chunk("c", 1, "m", {field: "hmm"})))
    delta = chunk.choices[0].delta
    assert delta is not None
    assert getattr(delta, field) == "hmm"


def test_text_completion_chunk() -> None:
    chunk = decode(wire.encode(wire.completion_chunk("cmpl-1", 1, "m", "abc", "stop", None)))
    assert chunk.choices[0].text == "abc"
    assert chunk.choices[0].delta is None
    assert chunk.choices[0].finish_reason == "stop"


def test_mid_stream_error_event() -> None:
    event = wire.stream_error_event("boom", 500)
    payload = event.removeprefix(b"data: ").rstrip(b"\n")
    chunk = decode(payload)
    assert chunk.error is not None
    assert chunk.error["message"] == "boom"
    assert chunk.error["code"] == 500
    assert chunk.choices == []


@pytest.mark.parametrize(
    "payload",
    [b"{", b'{"choices": "no"}', b'{"choices": [{"delta": 5}]}', b'{"usage": {"prompt_tokens": "x"}}'],
)
def test_malformed_chunks_raise(payload: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode(payload)


def test_out_chunk_carries_only_openai_fields() -> None:
    chunk = OutChunk(
        "chatcmpl-x", "chat.completion.chunk", 1, "m", [OutChatChoice(0, OutDelta(content="hi"))]
    )
    assert msgspec.json.encode(chunk) == (
        b'{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}'
    )


def test_out_chunk_usage_and_extension_when_set() -> None:
    chunk = OutChunk(
        "cmpl-x",
        "text_completion",
        1,
        "m",
        [OutTextChoice(0, "", finish_reason="stop")],
        usage=Usage(1, 2, 3),
        menshen={"stopped": "x"},
    )
    assert msgspec.to_builtins(chunk) == {
        "id": "cmpl-x",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "menshen": {"stopped": "x"},
    }


def test_full_completion_message() -> None:
    out = OutCompletion(
        "chatcmpl-y",
        "chat.completion",
        2,
        "m",
        [OutChatFullChoice(0, OutMessage("assistant", "answer"), finish_reason="stop")],
        usage=Usage(),
    )
    assert msgspec.to_builtins(out)["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "answer"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert "menshen" not in msgspec.to_builtins(out)


def test_engine_model_list_decodes() -> None:
    upstream = msgspec.json.decode(wire.encode(wire.model_list(["a"], "/m", 2048, 5)), type=UpModelList)
    assert [(c.id, c.created, c.max_model_len) for c in upstream.data] == [("a", 5, 2048)]


def test_model_card_carries_every_openai_field() -> None:
    listing = ModelList([ModelCard("a", created=0, owned_by="menshen", max_model_len=2048)])
    assert msgspec.to_builtins(listing) == {
        "data": [{"id": "a", "object": "model", "created": 0, "owned_by": "menshen", "max_model_len": 2048}],
        "object": "list",
    }


# vLLM's hermes tool parser (vllm/tool_parsers/hermes_tool_parser.py) returns DeltaMessage(content=content,
# tool_calls=...), dumped with exclude_unset=True: content is null beside every tool-call delta.
TOOL_DELTAS: list[bytes] = [
    b'{"content":null,"tool_calls":[{"id":"chatcmpl-tool-0123456789abcdef","type":"function","index":0,'
    b'"function":{"name":"get_weather"}}]}',
    b'{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\": "}}]}',
    b'{"content":null,"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}',
    b'{"content":null,"tool_calls":[{"id":"chatcmpl-tool-fedcba9876543210","type":"function","index":1,'
    b'"function":{"name":"get_time"}},{"index":1,"function":{"arguments":"{}"}}]}',
]


@pytest.mark.parametrize("raw", TOOL_DELTAS)
def test_tool_call_deltas_re_encode_byte_for_byte(raw: bytes) -> None:
    up = msgspec.json.decode(raw, type=UpDelta)
    assert up.tool_calls is not None
    out = OutDelta(
        content=up.content,
        tool_calls=[
            OutToolCallDelta(
                id=t.id,
                type="function" if t.type else None,
                index=t.index,
                function=OutFunctionDelta(t.function.name, t.function.arguments) if t.function else None,
            )
            for t in up.tool_calls
        ],
    )
    assert msgspec.json.encode(out) == raw


@pytest.mark.parametrize(
    ("delta", "encoded"),
    [
        (OutDelta(content=None, reasoning="r"), b'{"reasoning":"r"}'),
        (OutDelta(), b"{}"),
        (OutDelta(content=""), b'{"content":""}'),
        (OutDelta(content=None, tool_calls=[]), b"{}"),
        (
            OutDelta(content="pre", tool_calls=[OutToolCallDelta(index=0)]),
            b'{"content":"pre","tool_calls":[{"index":0}]}',
        ),
    ],
)
def test_content_null_only_beside_tool_calls(delta: OutDelta, encoded: bytes) -> None:
    assert msgspec.json.encode(delta) == encoded


def test_a_chunk_with_vllm_extras_and_tool_calls_decodes() -> None:
    raw = (
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
        b'"delta":' + TOOL_DELTAS[0] + b',"logprobs":null,"finish_reason":null,"token_ids":[1,2]}]}'
    )
    chunk = msgspec.json.decode(raw, type=UpChunk)
    delta = chunk.choices[0].delta
    assert delta is not None and delta.tool_calls is not None
    call = delta.tool_calls[0]
    assert (call.index, call.id, call.type) == (0, "chatcmpl-tool-0123456789abcdef", "function")
    assert call.function is not None and (call.function.name, call.function.arguments) == (
        "get_weather",
        None,
    )
    finish = b'{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls","stop_reason":null}]}'
    assert msgspec.json.decode(finish, type=UpChunk).choices[0].finish_reason == "tool_calls"


def test_assembler_rebuilds_parallel_calls_for_a_non_streamed_answer() -> None:
    assembler = ToolCallAssembler()
    assert not assembler
    for raw in TOOL_DELTAS:
        up = msgspec.json.decode(raw, type=UpDelta)
        assert up.tool_calls is not None
        assembler.add(up.tool_calls)
    message = OutMessage("assistant", None, tool_calls=assembler.calls())
    assert msgspec.json.decode(msgspec.json.encode(message)) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "chatcmpl-tool-0123456789abcdef",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "chatcmpl-tool-fedcba9876543210",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    # vLLM's ToolCall key order: id, type, function
    assert msgspec.json.encode(message.tool_calls).startswith(
        b'[{"id":"chatcmpl-tool-0123456789abcdef","type"'
    )

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
    OutMessage,
    OutTextChoice,
    UpChunk,
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

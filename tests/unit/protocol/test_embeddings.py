"""The embeddings request allow-list and the response re-encoding."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from gateway.protocol import (
    EmbeddingResponse,
    GuardText,
    UpEmbeddingResponse,
    apply_guard_texts,
    decode_embedding_request,
    guard_texts,
)
from gateway.protocol.embeddings import EMPTY_INPUT_REFUSED, NOT_TEXT_REFUSED


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "all-MiniLM-L6-v2", "input": "annual leave", **fields}


def decode(fields: dict[str, Any]) -> Any:
    return decode_embedding_request(msgspec.json.encode(fields))


ACCEPTED: list[dict[str, Any]] = [
    body(),
    body(input=["a", "b"]),
    body(input=["x"] * 2048),
    body(encoding_format="float"),
    body(encoding_format="base64"),
    body(dimensions=1),
    body(dimensions=256),
    body(user="u" * 256),
    body(user=None),
]


@pytest.mark.parametrize("fields", ACCEPTED)
def test_accepted_and_round_tripped(fields: dict[str, Any]) -> None:
    assert msgspec.to_builtins(decode(fields)) == fields


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("token ids", body(input=[1, 2, 3]), NOT_TEXT_REFUSED),
    ("batch of token ids", body(input=[[1, 2], [3]]), NOT_TEXT_REFUSED),
    ("text and token ids", body(input=["a", [1]]), NOT_TEXT_REFUSED),
    ("empty list", body(input=[]), EMPTY_INPUT_REFUSED),
    ("empty string", body(input=""), EMPTY_INPUT_REFUSED),
    ("an empty string in the list", body(input=["a", ""]), EMPTY_INPUT_REFUSED),
    ("too many inputs", body(input=["x"] * 2049), "length <= 2048"),
    ("input a number", body(input=5), "Expected `str | array`"),
    ("input null", body(input=None), "Expected `str | array`"),
    ("input objects", body(input=[{"role": "user", "content": "x"}]), "Expected `int | str | array`"),
    ("input missing", {"model": "m"}, "missing required field `input`"),
    ("model missing", {"input": "x"}, "missing required field `model`"),
    ("encoding_format bytes", body(encoding_format="bytes"), "Invalid enum value 'bytes'"),
    ("dimensions 0", body(dimensions=0), "Expected `int` >= 1"),
    ("dimensions a string", body(dimensions="8"), "Expected `int`"),
    ("user too long", body(user="u" * 257), "length <= 256"),
    ("vLLM's embed_dtype", body(embed_dtype="float16"), "unknown field `embed_dtype`"),
    (
        "vLLM's truncate_prompt_tokens",
        body(truncate_prompt_tokens=5),
        "unknown field `truncate_prompt_tokens`",
    ),
    ("vLLM's messages", body(messages=[]), "unknown field `messages`"),
]


@pytest.mark.parametrize(("case", "fields", "message"), REJECTED)
def test_rejected_with_a_clear_message(case: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        decode(fields)


def test_guard_texts_and_masking() -> None:
    many = decode(body(input=["leave for Alice", "payroll"]))
    assert guard_texts(many) == [
        GuardText("input", "input[0]", "leave for Alice"),
        GuardText("input", "input[1]", "payroll"),
    ]
    apply_guard_texts(many, ["leave for [MASKED]", "payroll"])
    assert msgspec.to_builtins(many)["input"] == ["leave for [MASKED]", "payroll"]
    one = decode(body(input="Alice"))
    assert guard_texts(one) == [GuardText("input", "input", "Alice")]
    apply_guard_texts(one, ["[MASKED]"])
    assert one.input == "[MASKED]" and one.texts() == one.prompt_text() == ["[MASKED]"]


# vLLM's EmbeddingResponse.model_dump() (vllm/entrypoints/pooling/embed/protocol.py), as JSONResponse sends it.
VLLM_BODY = (
    b'{"id":"embd-0123456789abcdef","object":"list","created":1700000000,"model":"minilm",'
    b'"data":[{"index":0,"object":"embedding","embedding":[0.5,-0.25]},'
    b'{"index":1,"object":"embedding","embedding":"AACAPw=="}],'
    b'"usage":{"prompt_tokens":7,"total_tokens":7,"completion_tokens":0,'
    b'"prompt_tokens_details":null,"completion_tokens_details":null}}'
)


def test_client_response_has_only_openai_fields() -> None:
    up = msgspec.json.decode(VLLM_BODY, type=UpEmbeddingResponse)
    out = EmbeddingResponse.from_upstream(up, "embed-small")
    assert msgspec.json.encode(out) == (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]},'
        b'{"object":"embedding","index":1,"embedding":"AACAPw=="}],"model":"embed-small",'
        b'"usage":{"prompt_tokens":7,"total_tokens":7}}'
    )

"""The request allow-list: every accepted field round-trips, every bound and every other field is refused."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.protocol import LOGPROBS_REFUSED, ChatCompletionRequest, CompletionRequest, decode_request

USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen3-8b", "messages": [USER], **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen3-8b", "prompt": "Once upon a time", **fields}


def decode_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    request = decode_request(msgspec.json.encode(body), ChatCompletionRequest)
    assert isinstance(request, ChatCompletionRequest)
    return request


def decode_completion(body: dict[str, Any]) -> CompletionRequest:
    request = decode_request(msgspec.json.encode(body), CompletionRequest)
    assert isinstance(request, CompletionRequest)
    return request


# Fields both request kinds accept, with a value at or inside each bound.
SAMPLING_ACCEPTED: list[tuple[str, Any]] = [
    ("max_tokens", 1),
    ("max_tokens", 100000),
    ("max_tokens", None),
    ("temperature", 0.0),
    ("temperature", 2.0),
    ("temperature", 1),
    ("temperature", None),
    ("top_p", 1.0),
    ("top_p", 0.01),
    ("top_k", -1),
    ("top_k", 20),
    ("min_p", 0.0),
    ("min_p", 1.0),
    ("presence_penalty", -2.0),
    ("presence_penalty", 2.0),
    ("frequency_penalty", -2.0),
    ("frequency_penalty", 2.0),
    ("repetition_penalty", 2.0),
    ("repetition_penalty", 0.01),
    ("stop", "\n\n"),
    ("stop", ["a" * 256] * 16),
    ("stop", []),
    ("stop", None),
    ("seed", 42),
    ("seed", -1),
    ("seed", None),
    ("n", 1),
    ("stream", True),
    ("stream_options", {"include_usage": True}),
    ("stream_options", {}),
    ("stream_options", None),
    ("user", "u" * 256),
    ("user", None),
]

# Out of bounds or of the wrong type, for both request kinds.
SAMPLING_REJECTED: list[tuple[str, Any]] = [
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", 1.5),
    ("max_tokens", "100"),
    ("temperature", -0.01),
    ("temperature", 2.01),
    ("temperature", "hot"),
    ("top_p", 0.0),
    ("top_p", 1.01),
    ("top_k", -2),
    ("top_k", 2.5),
    ("min_p", -0.1),
    ("min_p", 1.1),
    ("presence_penalty", -2.1),
    ("presence_penalty", 2.1),
    ("frequency_penalty", -2.1),
    ("frequency_penalty", 2.1),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", 2.1),
    ("stop", "a" * 257),
    ("stop", ["a"] * 17),
    ("stop", ["ok", "a" * 257]),
    ("stop", 7),
    ("seed", "7"),
    ("n", 2),
    ("n", 0),
    ("n", None),
    ("stream", "yes"),
    ("stream", 1),
    ("stream", None),
    ("stream_options", {"include_usage": "yes"}),
    ("stream_options", {"include_usage": True, "continuous_usage_stats": True}),
    ("stream_options", True),
    ("user", "u" * 257),
    ("user", 12),
    ("model", 12),
    ("model", None),
]

# Fields vLLM (or OpenAI) accepts that a client of the gateway must never control.
FORBIDDEN_FIELDS: list[tuple[str, Any]] = [
    ("chat_template", "{{ messages }}"),
    ("vllm_xargs", {"k": "v"}),
    ("functions", []),
    ("logit_bias", {"50256": -100}),
    ("prompt_logprobs", 1),
    ("guided_json", {"type": "object"}),
    ("guided_regex", ".*"),
    ("guided_choice", ["a"]),
    ("guided_grammar", "root ::= 'a'"),
    ("structured_outputs", {"json": {}}),
    ("repetition_detection", {"min_count": 1000}),
    ("echo", True),
    ("suffix", "x"),
    ("best_of", 2),
    ("use_beam_search", True),
    ("ignore_eos", True),
    ("min_tokens", 10),
    ("skip_special_tokens", False),
    ("add_generation_prompt", False),
    ("continue_final_message", True),
    ("add_special_tokens", True),
    ("documents", [{"text": "x"}]),
    ("mm_processor_kwargs", {}),
    ("priority", -10),
    ("request_id", "mine"),
    ("kv_transfer_params", {}),
    ("cache_salt", "s"),
    ("truncate_prompt_tokens", 5),
    ("return_token_ids", True),
    ("metadata", {}),
    ("store", True),
    ("service_tier", "flex"),
    ("unknown_field", 1),
]


# Chat fields a text completion does not take.
CHAT_ONLY_FIELDS: list[tuple[str, Any]] = [
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"),
    ("parallel_tool_calls", True),
    ("response_format", {"type": "json_object"}),
    ("top_logprobs", 5),
]


@pytest.mark.parametrize(("name", "value"), CHAT_ONLY_FIELDS)
def test_completion_refuses_chat_only_fields(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"unknown field `{name}`"):
        decode_completion(completion(**{name: value}))


LOGPROBS_ASKED: list[tuple[str, Any]] = [("logprobs", True), ("logprobs", 1), ("top_logprobs", 5)]
LOGPROBS_DECLINED: list[tuple[str, Any]] = [
    ("logprobs", False),
    ("logprobs", 0),
    ("logprobs", None),
    ("top_logprobs", 0),
    ("top_logprobs", None),
]


@pytest.mark.parametrize(("name", "value"), LOGPROBS_ASKED)
def test_chat_refuses_logprobs_and_says_why(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        decode_chat(chat(**{name: value}))
    assert str(info.value) == LOGPROBS_REFUSED
    assert "guardrail masked" in str(info.value)


@pytest.mark.parametrize("value", [True, 1, 5])
def test_completion_refuses_logprobs_and_says_why(value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match="would reveal text a guardrail masked"):
        decode_completion(completion(logprobs=value))


@pytest.mark.parametrize(("name", "value"), LOGPROBS_DECLINED)
def test_declined_logprobs_are_accepted_and_never_forwarded(name: str, value: Any) -> None:
    assert msgspec.to_builtins(decode_chat(chat(**{name: value}))) == chat()


@pytest.mark.parametrize(("name", "value"), [("logprobs", -1), ("logprobs", "yes"), ("top_logprobs", -1)])
def test_malformed_logprobs_are_refused(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_chat(chat(**{name: value}))


@pytest.mark.parametrize(("name", "value"), SAMPLING_ACCEPTED)
def test_chat_accepts_and_round_trips_each_sampling_field(name: str, value: Any) -> None:
    body = chat(**{name: value})
    assert msgspec.to_builtins(decode_chat(body)) == body


@pytest.mark.parametrize(("name", "value"), SAMPLING_ACCEPTED)
def test_completion_accepts_and_round_trips_each_sampling_field(name: str, value: Any) -> None:
    body = completion(**{name: value})
    assert msgspec.to_builtins(decode_completion(body)) == body


@pytest.mark.parametrize(("name", "value"), SAMPLING_REJECTED)
def test_chat_rejects_out_of_bounds_and_wrong_types(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_chat(chat(**{name: value}))


@pytest.mark.parametrize(("name", "value"), SAMPLING_REJECTED)
def test_completion_rejects_out_of_bounds_and_wrong_types(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_completion(completion(**{name: value}))


@pytest.mark.parametrize(("name", "value"), FORBIDDEN_FIELDS)
def test_chat_refuses_fields_the_engine_would_accept(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"unknown field `{name}`"):
        decode_chat(chat(**{name: value}))


@pytest.mark.parametrize(("name", "value"), FORBIDDEN_FIELDS)
def test_completion_refuses_fields_the_engine_would_accept(name: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"unknown field `{name}`"):
        decode_completion(completion(**{name: value}))


CHAT_ONLY_ACCEPTED: list[dict[str, Any]] = [
    {"max_completion_tokens": 1},
    {"max_completion_tokens": None},
    {"chat_template_kwargs": {"enable_thinking": False}},
    {"chat_template_kwargs": {"enable_thinking": True}},
    {"chat_template_kwargs": {}},
    {"chat_template_kwargs": None},
    {"messages": [{"role": role, "content": "x"} for role in ("system", "developer", "user", "assistant")]},
    {"messages": [{"role": "user", "content": "x", "name": "alice"}]},
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ""}]}
        ]
    },
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [{"role": "user", "content": ""}]},
]


@pytest.mark.parametrize("fields", CHAT_ONLY_ACCEPTED)
def test_chat_accepts_and_round_trips_its_own_fields(fields: dict[str, Any]) -> None:
    body = chat(**fields)
    assert msgspec.to_builtins(decode_chat(body)) == body


CHAT_ONLY_REJECTED: list[tuple[str, dict[str, Any]]] = [
    ("no messages", {"messages": []}),
    ("messages not a list", {"messages": "hi"}),
    ("message not an object", {"messages": ["hi"]}),
    ("role missing", {"messages": [{"content": "hi"}]}),
    ("role tool alone", {"messages": [{"role": "tool", "content": "x"}]}),
    ("role function", {"messages": [{"role": "function", "content": "x"}]}),
    ("role unknown", {"messages": [{"role": "root", "content": "x"}]}),
    ("unknown field in message", {"messages": [{"role": "user", "content": "x", "extra": 1}]}),
    ("empty tool_calls", {"messages": [{"role": "assistant", "content": None, "tool_calls": []}]}),
    ("reasoning in message", {"messages": [{"role": "assistant", "content": "x", "reasoning": "y"}]}),
    ("content a number", {"messages": [{"role": "user", "content": 5}]}),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
    ("audio part", {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
    ("part without text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    (
        "unknown field in part",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]},
    ),
    ("name not a string", {"messages": [{"role": "user", "content": "x", "name": 1}]}),
    ("max_completion_tokens 0", {"max_completion_tokens": 0}),
    ("chat_template_kwargs other key", {"chat_template_kwargs": {"enable_thinking": False, "tools": []}}),
    ("chat_template_kwargs custom template", {"chat_template_kwargs": {"chat_template": "x"}}),
    ("enable_thinking not a bool", {"chat_template_kwargs": {"enable_thinking": "no"}}),
    ("prompt on chat", {"prompt": "x"}),
]


@pytest.mark.parametrize(("case", "fields"), CHAT_ONLY_REJECTED)
def test_chat_rejects(case: str, fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_chat(chat(**fields))


def test_chat_requires_model_and_messages() -> None:
    with pytest.raises(msgspec.ValidationError, match="missing required field `model`"):
        decode_chat({"messages": [USER]})
    with pytest.raises(msgspec.ValidationError, match="missing required field `messages`"):
        decode_chat({"model": "m"})


@pytest.mark.parametrize("prompt", ["", "text", ["one string"]])
def test_completion_accepts_prompt_forms(prompt: str | list[str]) -> None:
    body = completion(prompt=prompt)
    assert msgspec.to_builtins(decode_completion(body)) == body


@pytest.mark.parametrize(
    ("case", "prompt"),
    [
        ("empty list", []),
        ("batch of two", ["a", "b"]),
        ("token ids", [1, 2, 3]),
        ("nested token ids", [[1, 2]]),
        ("number", 5),
        ("null", None),
    ],
)
def test_completion_rejects_prompt_forms(case: str, prompt: Any) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_completion(completion(prompt=prompt))


@pytest.mark.parametrize(
    "fields", [{"messages": [USER]}, {"max_completion_tokens": 5}, {"chat_template_kwargs": {}}]
)
def test_completion_refuses_chat_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_completion(completion(**fields))


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'"text"', b"null", b'{"model": "m", "messages": [' + b"]" * 2],
)
def test_not_an_object_is_refused(body: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_request(body, ChatCompletionRequest)


def test_unset_and_default_fields_are_omitted_on_re_encoding() -> None:
    assert msgspec.to_builtins(decode_chat(chat())) == chat()
    assert msgspec.to_builtins(decode_completion(completion())) == completion()
    defaults = chat(stream=False, stream_options={"include_usage": False})
    assert msgspec.to_builtins(decode_chat(defaults)) == chat(stream_options={})
    no_content = chat(messages=[{"role": "assistant", "content": None}])
    assert msgspec.to_builtins(decode_chat(no_content)) == chat(messages=[{"role": "assistant"}])


def test_a_part_without_type_is_text_and_goes_upstream_typed() -> None:
    # msgspec reads a lone tagged struct without its tag; what is re-serialised is still a typed text part.
    request = decode_chat(chat(messages=[{"role": "user", "content": [{"text": "a"}]}]))
    parts = [{"type": "text", "text": "a"}]
    assert msgspec.to_builtins(request)["messages"] == [{"role": "user", "content": parts}]


def test_requested_max_tokens_prefers_max_completion_tokens() -> None:
    assert decode_chat(chat()).requested_max_tokens() is None
    assert decode_chat(chat(max_tokens=10)).requested_max_tokens() == 10
    assert decode_chat(chat(max_tokens=None)).requested_max_tokens() is None
    assert decode_chat(chat(max_tokens=10, max_completion_tokens=20)).requested_max_tokens() == 20
    assert decode_completion(completion(max_tokens=7)).requested_max_tokens() == 7


@pytest.mark.parametrize(
    ("options", "wanted"),
    [(None, False), ({}, False), ({"include_usage": False}, False), ({"include_usage": True}, True)],
)
def test_wants_usage(options: dict[str, bool] | None, wanted: bool) -> None:
    fields = {} if options is None else {"stream_options": options}
    assert decode_chat(chat(**fields)).wants_usage is wanted


@pytest.mark.parametrize(
    ("kwargs", "thinking"),
    [
        (None, True),
        ({}, True),
        ({"enable_thinking": True}, True),
        ({"enable_thinking": False}, False),
    ],
)
def test_thinking_is_on_unless_disabled(kwargs: dict[str, bool] | None, thinking: bool) -> None:
    fields = {} if kwargs is None else {"chat_template_kwargs": kwargs}
    assert decode_chat(chat(**fields)).thinking is thinking


def test_prompt_text_joins_parts_and_skips_nothing() -> None:
    request = decode_chat(
        chat(
            messages=[
                {"role": "system", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None},
            ]
        )
    )
    assert request.prompt_text() == ["rules", "a\nb", ""]
    assert decode_completion(completion(prompt=["only"])).prompt_text() == ["only"]
    assert decode_completion(completion(prompt="p")).prompt_text() == ["p"]

"""What goes to the engine: the validated request re-serialised with the policy's caps and defaults."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.errors import InvalidRequest
from gateway.guardrails import repetition_detection_params
from gateway.policy.sections import GenerationSection, LoopsSection, Sampling
from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.relay.upstream import UpstreamPlan, estimate_tokens, plan_call

GENERATION = GenerationSection()  # the defaults match policies/default/generation.yaml
LOOPS = LoopsSection(engine_backstop={"min_pattern_size": 1, "max_pattern_size": 64, "min_count": 8})
REPETITION = repetition_detection_params(LOOPS)
THINKING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
NON_THINKING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}


def chat(content: str = "hi", **fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **fields}
    return msgspec.json.decode(msgspec.json.encode(body), type=ChatCompletionRequest)


def completion(prompt: str = "hi", **fields: Any) -> CompletionRequest:
    body = {"model": "m", "prompt": prompt, **fields}
    return msgspec.json.decode(msgspec.json.encode(body), type=CompletionRequest)


def call(
    request: ChatCompletionRequest | CompletionRequest,
    generation: GenerationSection = GENERATION,
    loops: LoopsSection = LOOPS,
    repetition: dict[str, int] | None = None,
) -> tuple[UpstreamPlan, dict[str, Any]]:
    plan = plan_call(request, generation, repetition if loops.enabled else None)
    return plan, json.loads(plan.body(request))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 1024),  # the policy default
        ({"max_tokens": None}, 1024),
        ({"max_tokens": 100}, 100),
        ({"max_tokens": 4096}, 4096),
        ({"max_tokens": 100000}, 4096),  # capped by policy
        ({"max_completion_tokens": 77}, 77),
        ({"max_completion_tokens": 50000}, 4096),
        ({"max_tokens": 10, "max_completion_tokens": 20}, 20),  # the newer field wins
    ],
)
def test_max_tokens_default_and_cap(fields: dict[str, Any], expected: int) -> None:
    result, body = call(chat(**fields))
    assert result.max_tokens == expected
    assert body["max_tokens"] == expected
    assert "max_completion_tokens" not in body  # vLLM gets one field, the capped one


def test_max_tokens_fit_in_the_context_cap() -> None:
    generation = GenerationSection(context_cap=100, max_tokens_cap=4096, default_max_tokens=1024)
    request = chat("x" * 30)
    estimate = estimate_tokens(request.prompt_text())
    result, body = call(request, generation)
    assert result.prompt_estimate == estimate
    assert result.max_tokens == body["max_tokens"] == 100 - estimate


def test_max_tokens_is_never_below_one() -> None:
    request = chat("x" * 30)
    cap = estimate_tokens(request.prompt_text()) + 1
    result, _ = call(request, GenerationSection(context_cap=cap))
    assert result.max_tokens == 1


@pytest.mark.parametrize(
    ("request_", "param"),
    [(chat("x" * 3000), "messages"), (completion("x" * 3000), "prompt")],
    ids=["chat", "completion"],
)
def test_prompt_over_the_context_cap_is_refused(
    request_: ChatCompletionRequest | CompletionRequest, param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        call(request_, GenerationSection(context_cap=500))
    error = info.value
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", param)
    assert "500 tokens" in error.message
    assert "xxx" not in error.message


def test_prompt_exactly_at_the_cap_is_refused() -> None:
    request = chat("abc")
    with pytest.raises(InvalidRequest):
        call(request, GenerationSection(context_cap=estimate_tokens(request.prompt_text())))


@pytest.mark.parametrize(
    ("fields", "defaults"),
    [
        ({}, THINKING),
        ({"chat_template_kwargs": {"enable_thinking": True}}, THINKING),
        ({"chat_template_kwargs": {}}, THINKING),
        ({"chat_template_kwargs": {"enable_thinking": False}}, NON_THINKING),
    ],
)
def test_default_sampling_for_thinking_and_not(fields: dict[str, Any], defaults: dict[str, float]) -> None:
    result, body = call(chat(**fields))
    sampled = {
        k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "presence_penalty") if k in body
    }
    assert sampled == defaults
    assert result.temperature == defaults["temperature"]


def test_text_completions_use_non_thinking_defaults() -> None:
    _, body = call(completion())
    assert {k: body.get(k) for k in NON_THINKING} == NON_THINKING
    assert "min_p" not in body


def test_client_sampling_wins_and_null_means_default() -> None:
    _, body = call(chat(temperature=1.3, top_p=None, min_p=0.05, presence_penalty=0.5))
    assert body["temperature"] == 1.3
    assert body["top_p"] == THINKING["top_p"]
    assert body["min_p"] == 0.05
    assert body["presence_penalty"] == 0.5


def test_a_null_without_a_policy_default_is_not_sent() -> None:
    _, body = call(chat(presence_penalty=None, chat_template_kwargs={"enable_thinking": False}, min_p=None))
    assert "presence_penalty" not in body
    assert "min_p" not in body


def test_fields_outside_the_sampling_defaults_pass_through() -> None:
    _, body = call(chat(frequency_penalty=0.2, repetition_penalty=1.1, seed=7, stop=["\n"], user="u1"))
    assert (body["frequency_penalty"], body["repetition_penalty"], body["seed"]) == (0.2, 1.1, 7)
    assert (body["stop"], body["user"]) == (["\n"], "u1")


@pytest.mark.parametrize("temperature", [0, 0.0])
def test_greedy_is_refused_when_the_policy_says_so(temperature: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        call(chat(temperature=temperature), GenerationSection(refuse_greedy=True))
    assert (info.value.status, info.value.code, info.value.param) == (400, "greedy_refused", "temperature")


def test_greedy_from_the_policy_default_is_refused_too() -> None:
    generation = GenerationSection(refuse_greedy=True, thinking=Sampling(temperature=0))
    with pytest.raises(InvalidRequest, match="Greedy"):
        call(chat(), generation)


def test_greedy_is_allowed_by_default_and_low_temperature_always() -> None:
    result, body = call(chat(temperature=0))
    assert body["temperature"] == 0
    assert result.temperature == 0.0
    result, _ = call(chat(temperature=0.01), GenerationSection(refuse_greedy=True))
    assert result.temperature == 0.01


@pytest.mark.parametrize(
    "request_",
    [
        chat(),
        chat(stream=False),
        chat(stream=True, stream_options={"include_usage": False}),
        completion(stream=False),
    ],
    ids=["chat-unset", "chat-not-streamed", "chat-no-usage", "completion"],
)
def test_engine_is_always_asked_to_stream_with_usage(
    request_: ChatCompletionRequest | CompletionRequest,
) -> None:
    _, body = call(request_)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_repetition_backstop_is_sent_when_enabled() -> None:
    assert REPETITION == {"max_pattern_size": 64, "min_pattern_size": 1, "min_count": 8}
    _, body = call(chat(), repetition=REPETITION)
    assert body["repetition_detection"] == REPETITION


def test_no_repetition_backstop_without_params_or_with_loops_off() -> None:
    _, body = call(chat())
    assert "repetition_detection" not in body
    _, body = call(chat(), loops=LoopsSection(enabled=False), repetition=REPETITION)
    assert "repetition_detection" not in body


def test_body_is_the_allow_listed_request_only() -> None:
    _, body = call(chat(seed=1))
    assert set(body) == {
        "model",
        "messages",
        "seed",
        "max_tokens",
        "stream",
        "stream_options",
        *THINKING,
    }
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_the_request_object_is_left_unchanged() -> None:
    request = chat(max_completion_tokens=99999)
    before = msgspec.to_builtins(request)
    call(request)
    assert msgspec.to_builtins(request) == before


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([], 0),
        ([""], 4),
        (["abc"], 5),
        (["abcd"], 6),  # ceil(4 / 3) + 4
        (["你好世界"], 8),  # one token per CJK character
        (["こんにちは"], 9),
        (["안녕"], 6),
        (["你好 abc"], 2 + 2 + 4),  # 2 wide, 4 narrow (space included)
        (["a" * 300], 104),
        (["hi", "there"], 5 + 6),
    ],
)
def test_estimate_tokens(texts: list[str], expected: int) -> None:
    assert estimate_tokens(texts) == expected


def test_cjk_costs_more_per_character_than_ascii() -> None:
    assert estimate_tokens(["中" * 300]) > estimate_tokens(["a" * 300]) * 2

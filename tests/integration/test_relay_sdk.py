"""The official openai SDK against the running gateway and the fake engine: what it assembles is what the
engine sent, and what went upstream was re-serialised from the validated request."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import RunningGateway

ANSWER = "The capital of France is Paris, a city on the Seine."


def _script(fake: FakeEngine, name: str, script: Script) -> str:
    fake.scripts[name] = script
    return f"[[script:{name}]] question"


def test_streamed_chat_assembles_engine_text(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "answer", Script.of(ANSWER))
    stream = client.chat.completions.create(
        model="qwen3-8b", messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage chunk only when the client asks for it"
    upstream = fake_engine.last_request.json
    assert upstream["stream"] is True
    assert upstream["stream_options"] == {"include_usage": True}


def test_usage_chunk_when_asked(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "answer", Script.of(ANSWER))
    chunks = list(
        client.chat.completions.create(
            model="qwen3-8b",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    pieces = len(Script.of(ANSWER).pieces)
    assert usage.completion_tokens == pieces + 1  # one token per piece plus <|im_end|>
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens > 0


def test_reasoning_deltas_are_relayed(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "think", Script.of("Paris.", reasoning="The user asks about France."))
    chunks = list(
        client.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": prompt}], stream=True
        )
    )
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == "The user asks about France."
    assert content == "Paris."


def test_non_streamed_chat(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "think", Script.of(ANSWER, reasoning="Thinking about it."))
    result = client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": prompt}])
    assert result.choices[0].message.content == ANSWER
    assert getattr(result.choices[0].message, "reasoning", None) == "Thinking about it."
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.object == "chat.completion"


def test_completions_streamed_and_not(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "complete", Script.of(" once upon a time"))
    full = client.completions.create(model="qwen3-8b", prompt=prompt, max_tokens=20)
    assert full.choices[0].text == " once upon a time"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="qwen3-8b", prompt=prompt, stream=True)
        if c.choices
    )
    assert streamed == " once upon a time"
    assert fake_engine.last_request.path == "/v1/completions"


def test_models_lists_upstream(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["qwen3-8b"]


def test_content_parts_and_sampling_are_reserialised(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _script(fake_engine, "answer", Script.of(ANSWER))
    client.chat.completions.create(
        model="qwen3-8b",
        messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        temperature=0.2,
        max_tokens=50,
        stop=["\n\n"],
        seed=7,
        extra_body={"top_k": 5, "chat_template_kwargs": {"enable_thinking": False}},
    )
    sent = fake_engine.last_request.json
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    assert sent["temperature"] == 0.2 and sent["top_k"] == 5 and sent["seed"] == 7
    assert sent["max_tokens"] == 50 and sent["stop"] == ["\n\n"]
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    # Non-thinking defaults from the policy fill only what the client left unset.
    assert sent["top_p"] == 0.8


@pytest.mark.parametrize("field", ["chat_template", "vllm_xargs", "tools", "logit_bias"])
def test_unknown_or_forbidden_field_is_refused(
    fake_engine: FakeEngine, client: openai.OpenAI, field: str
) -> None:
    before = fake_engine.requests_total
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "hi"}], extra_body={field: {"x": 1}}
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == field and field in body["message"]
    assert fake_engine.requests_total == before, "nothing reaches the engine"


def test_nested_unknown_field_named(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="qwen3-8b",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinking": False, "tools": []}},
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == "chat_template_kwargs.tools"


def test_n_above_one_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}], n=2)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "n"


def test_response_has_no_vllm_extras(gateway: RunningGateway, fake_engine: FakeEngine) -> None:
    import httpx

    prompt = _script(fake_engine, "answer", Script.of(ANSWER))
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        json={"model": "qwen3-8b", "messages": [{"role": "user", "content": prompt}], "stream": True},
        timeout=10,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        chunk = json.loads(line[6:])
        assert "prompt_token_ids" not in chunk
        for choice in chunk["choices"]:
            assert "token_ids" not in choice

"""The official openai SDK, pointed straight at the fake, parses everything it sends."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import FakeEngine, Script
from tests.support.fakes import HELLO, MODEL

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


async def test_streamed_chat_assembles_the_scripted_text(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, finish, usage = "", "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += getattr(choice.delta, "reasoning", None) or ""
            finish = choice.finish_reason or finish
    assert content == HELLO.content
    assert reasoning == HELLO.reasoning
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == len(HELLO.pieces) + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_non_streamed_chat(sdk: openai.AsyncOpenAI) -> None:
    resp = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    message = resp.choices[0].message
    assert message.role == "assistant"
    assert message.content == HELLO.content
    assert getattr(message, "reasoning", None) == HELLO.reasoning
    assert resp.choices[0].finish_reason == "stop"
    assert resp.system_fingerprint is not None


async def test_completions_streamed_and_not(engine: FakeEngine, sdk: openai.AsyncOpenAI) -> None:
    engine.default_script = Script.of("one two three")
    full = await sdk.completions.create(model=MODEL, prompt="count")
    assert full.choices[0].text == "one two three"
    stream = await sdk.completions.create(model=MODEL, prompt="count", stream=True)
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == "one two three"


async def test_models(sdk: openai.AsyncOpenAI) -> None:
    models = await sdk.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "vllm"


async def test_script_chosen_by_tag_and_by_prompt(engine: FakeEngine, sdk: openai.AsyncOpenAI) -> None:
    engine.scripts["poem"] = Script.of("Roses are red")
    engine.prompt_scripts["exact prompt"] = Script.of("By prompt")
    tagged = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "write [[script:poem]] please"}]
    )
    exact = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "exact prompt"}]
    )
    parts = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "[[script:poem]]"}]}]
    )
    assert tagged.choices[0].message.content == "Roses are red"
    assert exact.choices[0].message.content == "By prompt"
    assert parts.choices[0].message.content == "Roses are red"
    assert [r.script for r in engine.requests] == ["poem", "prompt", "poem"]
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "[[script:nope]]"}]
        )


def test_sync_context_serves_a_sync_client() -> None:
    with (
        FakeEngine(models=("m",), default_script=Script.of("sync works")) as fe,
        openai.OpenAI(base_url=fe.base_url, api_key="k", max_retries=0, timeout=10) as client,
    ):
        resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "sync works"
        assert fe.requests_total == 1
    assert fe.errors == []

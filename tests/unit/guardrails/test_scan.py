"""Whole-text scans: evasions hit, clean text does not, actions, shadow mode and client overrides."""

from __future__ import annotations

import pytest

from gateway.guardrails import CompiledGuardrails
from tests.support.guardrails import Build

WORDS = [
    {"id": "w.cjk", "category": "violence", "action": "block", "words": ["禁词示例", "机密", "测试"]},
    {"id": "w.latin", "category": "abuse", "action": "block", "words": ["ass", "forbidden demo"]},
    {"id": "w.masked", "category": "confidential", "action": "mask", "words": ["bluefin", "天穹计划"]},
    {"id": "w.flagged", "category": "confidential", "action": "flag", "words": ["confidential"]},
]


@pytest.fixture
def guard(build: Build) -> CompiledGuardrails:
    return build(
        WORDS, clients={"lab": {"tier": "t", "guardrails": {"disable": ["w.cjk"], "shadow": ["w.latin"]}}}
    )


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("ＦＯＲＢＩＤＤＥＮ ＤＥＭＯ", "w.latin"),  # full-width
        ("ⓕⓞⓡⓑⓘⓓⓓⓔⓝ demo", "w.latin"),  # circled letters
        ("for\u200bbid\u200cden\u00ad demo", "w.latin"),  # zero-width characters and a soft hyphen
        ("禁\u200b词\u2063示\ufeff例", "w.cjk"),
        ("禁 词 示 例", "w.cjk"),  # spaces
        ("禁，词。示！例", "w.cjk"),  # punctuation
        ("禁￥词$示¥例", "w.cjk"),  # currency symbols
        ("這是機密", "w.cjk"),  # traditional form of 机密
        ("天穹計劃", "w.masked"),
        ("FoRbIdDeN dEmO", "w.latin"),  # mixed case
        ("fоrbіddеn dеmо", "w.latin"),  # Cyrillic о і е
        ("you ass!", "w.latin"),
        ("A.S.S", "w.latin"),
        ("the CONFIDENTIAL memo", "w.flagged"),
    ],
)
def test_evasions_hit(guard: CompiledGuardrails, text: str, rule: str) -> None:
    verdict = guard.scan(text, "input")
    assert rule in {h.rule for h in verdict.hits}


@pytest.mark.parametrize(
    "text",
    [
        "I am your assistant",
        "a classic massive bass",
        "passage, assess, glass",
        "禁止使用词语示范",  # shares characters with 禁词示例, never the word
        "机器密码",  # 机 and 密 apart
        "测量试验",
        "forbiddendemonstration",  # Latin word boundary
        "confidentiality",
    ],
)
def test_clean_text_does_not_hit(guard: CompiledGuardrails, text: str) -> None:
    verdict = guard.scan(text, "input")
    assert verdict.action == "allow"
    assert verdict.hits == ()


def test_separator_gap_is_bounded(build: Build) -> None:
    guard = build(WORDS, max_separator_gap=2)
    assert guard.scan("禁  词示例", "input").action == "block"
    assert guard.scan("禁   词示例", "input").action == "allow"
    assert build(WORDS, max_separator_gap=0).scan("禁 词示例", "input").action == "allow"


def test_offsets_index_the_original_text(guard: CompiledGuardrails) -> None:
    text = "前文\u200b禁 词\u200b示例后文"
    (hit,) = guard.scan(text, "input").hits
    assert text[hit.start : hit.end] == "禁 词\u200b示例"


def test_mask_keeps_length_and_masks_only_the_span(guard: CompiledGuardrails) -> None:
    text = "see Ｂｌｕｅ-ｆｉｎ now and 天 穹 計 劃."
    verdict = guard.scan(text, "output")
    assert verdict.action == "mask"
    assert len(verdict.text) == len(text)
    assert verdict.text == "see " + "*" * 8 + " now and " + "*" * 7 + "."


def test_strongest_action_wins(guard: CompiledGuardrails) -> None:
    verdict = guard.scan("confidential bluefin ass", "input")
    assert verdict.action == "block"
    assert {h.rule for h in verdict.hits} == {"w.flagged", "w.masked", "w.latin"}


def test_client_overrides_disable_and_shadow(guard: CompiledGuardrails) -> None:
    assert guard.scan("机密", "input", client_id="lab").hits == ()
    verdict = guard.scan("forbidden demo", "input", client_id="lab")
    assert verdict.action == "allow"
    assert [(h.rule, h.mode) for h in verdict.hits] == [("w.latin", "shadow")]
    assert guard.scan("forbidden demo", "input", client_id="someone-else").action == "block"


def test_where_limits_a_rule(build: Build) -> None:
    guard = build(
        [{"id": "w.out", "category": "c", "action": "block", "where": ["output"], "words": ["机密"]}]
    )
    assert guard.scan("机密", "input").action == "allow"
    assert guard.scan("机密", "output").action == "block"
    assert guard.scan("机密", "reasoning").action == "allow"


def test_shadow_rule_records_without_acting(build: Build) -> None:
    guard = build([{"id": "w.s", "category": "c", "action": "mask", "mode": "shadow", "words": ["机密"]}])
    verdict = guard.scan("这是机密", "output")
    assert verdict.action == "allow"
    assert verdict.text == "这是机密"
    assert [h.mode for h in verdict.hits] == ["shadow"]


def test_words_from_lists_are_used(build: Build) -> None:
    guard = build(
        [{"id": "w.l", "category": "c", "action": "block", "lists": ["codes"]}],
        lists={"codes": ("青龙项目",)},
    )
    assert guard.scan("关于青龍項目的进展", "input").action == "block"


def test_expanding_characters_keep_offsets(build: Build) -> None:
    guard = build([{"id": "w.f", "category": "c", "action": "mask", "words": ["fine"]}])
    verdict = guard.scan("so ﬁne!", "output")
    assert verdict.text == "so ***!"

"""The stream scanner: nothing of a banned word is released, masks span chunks, splits never matter."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.guardrails import CompiledGuardrails, Decision, GuardrailStream, compile_guardrails, mask_spans
from gateway.policy.loader import load_bundle
from tests.support.guardrails import DEFAULT_BUNDLE, Build, build_guardrails, stream

RULES = [
    {
        "id": "w.block",
        "category": "violence",
        "action": "block",
        "words": ["禁词示例", "forbidden demo", "ass"],
    },
    {"id": "w.mask", "category": "confidential", "action": "mask", "words": ["天穹计划", "bluefin", "青龙"]},
    {"id": "w.flag", "category": "confidential", "action": "flag", "words": ["机密", "confidential"]},
    {"id": "w.shadow", "category": "c", "action": "block", "mode": "shadow", "words": ["示例", "demo"]},
]


@pytest.fixture
def guard(build: Build) -> CompiledGuardrails:
    return build(RULES)


def _splits(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_banned_word_split_across_chunks_is_never_released(guard: CompiledGuardrails, size: int) -> None:
    text = "你好，这是禁 词示例，后面还有很多内容。"
    released, stop, decisions = stream(guard.stream_check(None), _splits(text, size))
    assert stop is not None
    assert stop.stop is not None
    assert stop.stop.finish_reason == "content_filter"
    assert stop.stop.extension == {"stopped": "content_filter", "rule": "w.block"}
    assert "".join(released) == "你好，这是"
    assert "w.block" in {d.rule for d in decisions}


def test_two_chunks(guard: CompiledGuardrails) -> None:
    check = guard.stream_check(None)
    first = check.feed("content", "please don't say forbid")
    assert "forbid" not in first.text
    second = check.feed("content", "den demo now")
    assert second.stop is not None
    assert first.text + second.text == "please don't say "


def test_text_without_a_possible_match_is_released_at_once(guard: CompiledGuardrails) -> None:
    check = guard.stream_check(None)
    assert check.feed("content", "Hello there, ").text == "Hello there, "
    # 禁 starts 禁词示例: held back; the next character rules it out and both are released
    assert check.feed("content", "禁").text == ""
    assert check.feed("content", "止").text == "禁止"


def test_latin_word_is_held_until_its_boundary_is_known(guard: CompiledGuardrails) -> None:
    check = guard.stream_check(None)
    assert check.feed("content", "my ass").text == "my "
    assert check.feed("content", "istant").text == "assistant"
    assert check.finish("content").stop is None


def test_masking_across_chunk_boundaries(guard: CompiledGuardrails) -> None:
    text = "项目代号是天 穹計劃和Blue\u200bFin，完毕"
    for size in (1, 2, 5):
        released, stop, decisions = stream(guard.stream_check(None), _splits(text, size))
        assert stop is None
        assert "".join(released) == "项目代号是" + "*" * 5 + "和" + "*" * 8 + "，完毕"
        assert [d.rule for d in decisions] == ["w.mask", "w.mask"]


def test_flag_and_shadow_only_record(guard: CompiledGuardrails) -> None:
    text = "这份机密文件的示例"
    released, stop, decisions = stream(guard.stream_check(None), _splits(text, 2))
    assert stop is None
    assert "".join(released) == text
    assert {(d.rule, d.mode) for d in decisions} == {("w.flag", "enforce"), ("w.shadow", "shadow")}
    assert all(d.where == "output" for d in decisions)
    assert [d.matched for d in decisions if d.rule == "w.flag"] == ["机密"]


def test_content_and_reasoning_are_scanned_separately(guard: CompiledGuardrails) -> None:
    check = guard.stream_check(None)
    assert check.feed("reasoning", "禁词").text == ""
    assert check.feed("content", "示例").text == "示例"  # not joined with the reasoning's 禁词
    result = check.feed("reasoning", "示例")
    assert result.stop is not None
    assert result.decisions is not None
    assert result.decisions[-1].where == "reasoning"


def test_patterns_are_held_back_then_masked(default_guardrails: CompiledGuardrails) -> None:
    text = "请联系 13812345678 或发邮件，谢谢。" + "这是一段很普通的回答文本。" * 10
    released, stop, _ = stream(default_guardrails.stream_check(None), list(text))
    assert stop is None
    assert "13812345678" not in "".join(released[:-1])
    assert "".join(released) == text.replace("13812345678", "*" * 11)
    # long before the end of the stream, the masked number has been released
    assert sum(len(r) for r in released[:-1]) > len(text) - default_guardrails.max_pattern_chars - 16


# --- pattern hold-back: only from where a match could be in progress ----------------------------


def _held(check: GuardrailStream, chunks: list[str]) -> list[tuple[str, str]]:
    """Feed chunks one by one: (released now, what the stream has seen and not released yet)."""
    seen, out, steps = "", "", []
    for chunk in chunks:
        seen += chunk
        out += check.feed("content", chunk).text
        steps.append((out, seen[len(out) :]))
    return steps


def test_prose_without_pattern_characters_is_released_at_once(default_guardrails: CompiledGuardrails) -> None:
    check = default_guardrails.stream_check(None)
    assert check.feed("content", "这是一段很普通的回答文本，").text == "这是一段很普通的回答文本，"
    # a Latin word could be the start of an e-mail address: held until the character after it
    assert check.feed("content", "Hello").text == ""
    assert check.feed("content", " world").text == "Hello "
    assert check.feed("content", "。").text == "world。"


@pytest.mark.parametrize("number", ["13812345678", "+86 13812345678", "zhang.san@corp.example.cn"])
def test_a_match_arriving_one_character_at_a_time(
    default_guardrails: CompiledGuardrails, number: str
) -> None:
    text = "请联系 " + number + "，谢谢"
    steps = _held(default_guardrails.stream_check(None), list(text))
    start = len("请联系 ")
    end = start + len(number)
    # text before the match is released as it comes; nothing of the match while it is in progress
    assert [out for out, _ in steps[:end]] == [text[: min(i + 1, start)] for i in range(end)]
    # the character after the match shows it is complete: released masked at once
    out, held = steps[start + len(number)]
    assert out == "请联系 " + "*" * len(number) + "，"
    assert held == ""


def test_a_phone_number_split_across_chunks(default_guardrails: CompiledGuardrails) -> None:
    check = default_guardrails.stream_check(None)
    assert check.feed("content", "电话是1381").text == "电话是"
    assert check.feed("content", "2345").text == ""
    assert check.feed("content", "678").text == ""  # complete, but a further digit would undo it
    assert check.feed("content", "，好").text == "*" * 11 + "，好"


def test_text_ending_while_a_match_is_open(default_guardrails: CompiledGuardrails) -> None:
    check = default_guardrails.stream_check(None)
    assert check.feed("content", "电话13812345678").text == "电话"
    assert check.finish("content").text == "*" * 11
    check = default_guardrails.stream_check(None)
    assert check.feed("content", "编号1381234").text == "编号"
    assert check.finish("content").text == "1381234"


def test_a_candidate_that_does_not_match_is_released(default_guardrails: CompiledGuardrails) -> None:
    check = default_guardrails.stream_check(None)
    text = "订单号 1381234567890"  # 13 digits: not a mobile number, too short for a card
    assert check.feed("content", text).text == "订单号 "
    result = check.feed("content", " 已发货")
    assert result.text == "1381234567890 已发货"
    assert result.decisions is None
    # a card number failing the Luhn check is held while it could grow, then released as it is
    check = default_guardrails.stream_check(None)
    assert check.feed("content", "卡 4111 1111 1111 1112").text == "卡 "
    assert check.feed("content", "。").text == "4111 1111 1111 1112。"


def test_hold_back_is_bounded_by_max_pattern_chars(build: Build) -> None:
    # a pattern longer than max_pattern_chars breaks the contract; the hold-back stays bounded anyway
    guard = build(
        [{"id": "p.long", "category": "c", "action": "mask", "pattern": "<[a-z]{1,200}>"}],
        max_pattern_chars=16,
    )
    steps = _held(guard.stream_check(None), list("<" + "a" * 100 + ">!"))
    assert max(len(held) for _, held in steps) == 15
    # text that cannot start a match is never held
    assert all(held == "" for _, held in _held(guard.stream_check(None), list("a>" * 20)))


def test_a_long_digit_run_is_held_only_while_it_could_be_a_number(
    default_guardrails: CompiledGuardrails,
) -> None:
    steps = _held(default_guardrails.stream_check(None), list("1" * 100))
    # an e-mail address's local part has 20 characters at most (a card 19 digits): the 21st shows the
    # run is neither, and nothing is held after it
    assert [len(held) for _, held in steps[:22]] == [*range(1, 21), 0, 0]
    assert all(held == "" for _, held in steps[20:])


def test_patterns_the_partial_matcher_cannot_judge_hold_from_their_start_character(build: Build) -> None:
    guard = build(
        [{"id": "p.b", "category": "c", "action": "mask", "pattern": r"\bdemo\b"}], max_pattern_chars=16
    )
    check = guard.stream_check(None)
    assert check.feed("content", "这是 ").text == "这是 "
    # word boundaries test the end of the text unseen by partial matching: a possible match is held from
    # its first character until it is max_pattern_chars old
    assert check.feed("content", "a demo").text == "a "
    assert check.feed("content", " " * 6).text == ""
    assert check.feed("content", " " * 10).text == "****" + " " * 16


def test_a_pattern_whose_reach_search_would_be_exponential_masks_like_a_whole_text_scan(build: Build) -> None:
    # `reach` (never matching) tries every split of a digit run: exponential here, while a plain search
    # stops at once. Such a pattern goes without it, so a long run is masked, never cut as a timeout.
    guard = build(
        [
            {
                "id": "p.ids",
                "category": "c",
                "action": "mask",
                "pattern": r"(?<![0-9])(?:\d{1,4}[ -]?){4,12}(?![0-9])",
            }
        ],
        max_pattern_chars=64,
    )
    (pattern,) = guard.patterns
    assert pattern.reach is None
    text = "ids " + "1" * 40 + " done"
    released, stop, decisions = stream(guard.stream_check(None), list(text))
    assert stop is None
    assert (
        "".join(released) == _reference(guard, text)[0] == "ids " + "*" * 41 + "done"
    )  # [ -]? takes the space
    assert [(d.action, d.detail) for d in decisions] == [("mask", ())]


def test_two_blocks_at_one_start_stop_on_the_same_rule_however_the_text_is_split(build: Build) -> None:
    guard = build(
        [
            {"id": "secrets.key", "category": "s", "action": "block", "pattern": r"sk-[a-z]{8}(?! ?\d)"},
            {"id": "misc.prefix", "category": "m", "action": "block", "pattern": r"sk-[a-z]{8}"},
        ]
    )
    text = "key: sk-abcdefgh now"
    for chunks in ([text], ["key: sk-abcdefgh ", "now"], list(text)):
        released, stop, _ = stream(guard.stream_check(None), chunks)
        assert "".join(released) == "key: "
        assert stop is not None and stop.stop is not None, chunks
        assert stop.stop.extension["rule"] == "secrets.key", chunks


# --- split invariance ------------------------------------------------------------------------------

FRAGMENTS = [
    "禁词示例", "禁", "词", "示例", "天穹", "計劃", "机密", "ass", "bluefin", "Ｂｌｕｅ", "forbidden", "demo",
    "confidential", "assistant", "青龙", " ", "  ", "，", "\u200b", "\u00ad", "￥", "\n", "a", "x", "好",
    "的",
    "13812345678", "4111 1111 1111 1111", "11010519491231002X", "a.b@example.com", "sk-", "1", "@", "ﬁ",
    "+86 ", "zhang.san@corp.example.cn", "b", "c", "bc", "9", "-", "\u3000", "１３８", "sk-abcdef",
]  # fmt: skip


def _reference(g: CompiledGuardrails, text: str) -> tuple[str, set[tuple[str, int, int, str, str]], bool]:
    """What a stream must produce, from the whole-text scan."""
    hits = g.hits(text, "output")
    masked = mask_spans(
        text, [(d.start, d.end) for d in hits if d.mode == "enforce" and d.action == "mask"], "*"
    )
    blocks = [d for d in hits if d.mode == "enforce" and d.action == "block"]
    if not blocks:
        return masked, {_key(d) for d in hits}, False
    index = {r.id: i for i, r in enumerate(g.rules)}
    first = min(blocks, key=lambda d: (d.start, d.end, index[d.rule]))
    return masked[: first.start], {_key(d) for d in hits if d.start < first.start} | {_key(first)}, True


def _key(d: Decision) -> tuple[str, int, int, str, str]:
    return (d.rule, d.start, d.end, d.action, d.mode)


def _guards() -> list[CompiledGuardrails]:
    card = r"(?<![0-9])[0-9](?:[ -]?[0-9]){15,18}(?![0-9])"
    patterns = [
        {"id": "p.mobile", "category": "pii", "action": "mask", "pattern": r"(?<![0-9])1[3-9]\d{9}(?![0-9])"},
        {"id": "p.card", "category": "pii", "action": "flag", "pattern": card, "validator": "luhn"},
        {"id": "p.key", "category": "s", "action": "block", "pattern": r"sk-[a-z]{3,12}"},
    ]
    # patterns whose complete matches more text can still change, and ones partial matching cannot judge
    edges = [
        {"id": "p.alt", "category": "c", "action": "mask", "pattern": r"abc|b"},
        {"id": "p.longer", "category": "c", "action": "block", "pattern": r"a(?:bcdef|bc)"},
        {"id": "p.bound", "category": "c", "action": "flag", "pattern": r"\bdemo\b"},
        {"id": "p.end", "category": "c", "action": "flag", "pattern": r"[0-9]{2}$"},
    ]
    return [
        build_guardrails(RULES),
        build_guardrails(RULES + patterns, max_pattern_chars=40, max_separator_gap=1),
        compile_guardrails(load_bundle(DEFAULT_BUNDLE).bundle),
        build_guardrails(RULES + edges, max_pattern_chars=16),
    ]


GUARDS = _guards()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=40),
    which=st.sampled_from([0, 1, 2, 3]),
)
def test_split_invariance(parts: list[str], cuts: list[int], which: int) -> None:
    g = GUARDS[which]
    text = "".join(parts)
    points = sorted({c for c in cuts if 0 < c < len(text)})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    released, stop, decisions = stream(g.stream_check(None), chunks)
    expected_text, expected_decisions, blocked = _reference(g, text)
    assert "".join(released) == expected_text
    assert (stop is not None) == blocked
    assert {_key(d) for d in decisions} == expected_decisions

"""The loop detector on the corpus, at thresholds, under random chunking, and its bounded state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.guardrails.loops import LoopDetector, LoopHit, find_loop
from gateway.policy.sections import LoopsSection

CORPUS = Path(__file__).parent / "loop_corpus"
MANIFEST: dict[str, dict[str, int | str]] = json.loads((CORPUS / "loops.json").read_text(encoding="utf-8"))
LOOPS = sorted(n for n in MANIFEST if "third_repeat_end" in MANIFEST[n])  # exact and near-dup cases
LEGIT = sorted(p.name for p in CORPUS.glob("legit_*"))
CFG = LoopsSection()


def read(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def approx_tokens(text: str) -> int:
    """Rough Qwen token count: one per CJK character, one per four other characters."""
    cjk = sum(1 for c in text if "\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef")
    return cjk + (len(text) - cjk + 3) // 4


def stream(text: str, sizes: list[int], cfg: LoopsSection = CFG) -> LoopHit | None:
    detector = LoopDetector(cfg)
    pos = 0
    i = 0
    while pos < len(text):
        size = sizes[i % len(sizes)]
        hit = detector.feed(text[pos : pos + size])
        if hit is not None:
            return hit
        pos += size
        i += 1
    return detector.finish()


def test_corpus_has_every_kind() -> None:
    kinds = {"table", "separators", "code", "numbered_list", "poem", "song", "digits", "json", "emphasis"}
    assert all(any(k in name for name in LEGIT) for k in kinds)
    assert any("zh" in n for n in LOOPS)
    assert any("neardup" in n for n in LOOPS)
    assert {MANIFEST[n]["field"] for n in LOOPS} == {"content", "reasoning"}


@pytest.mark.parametrize("name", LOOPS)
def test_each_loop_is_caught_after_its_third_repetition(name: str, record_property: object) -> None:
    text = read(name)
    third = int(MANIFEST[name]["third_repeat_end"])
    hit = stream(text, [3, 1, 4, 1, 5, 9, 2, 6])
    assert hit is not None, name
    # Exact and digit-only repeats: never cut a text repeated only three times. A paraphrase chain
    # certain at its third copy is cut right after it (its trailing blank line may follow later).
    if hit.kind == "similar":
        assert hit.offset >= len(text[:third].rstrip())
    else:
        assert hit.offset > third
    copies = {"near_dup": CFG.near_dup_min_repeats, "similar": CFG.similar_min_repeats}.get(
        hit.kind, CFG.min_repeats
    )
    assert hit.offset - third <= max(copies * hit.period, CFG.min_symbol_loop_chars)
    assert hit.start < third
    late = approx_tokens(text[third : hit.offset])
    print(f"\n{name}: {hit.kind} period={hit.period} repeats={hit.repeats} caught ~{late} tokens after 3rd")
    record_property("tokens_after_third_repeat", late)  # type: ignore[operator]


@pytest.mark.parametrize("name", LEGIT)
def test_legitimate_repetitive_text_is_not_flagged(name: str) -> None:
    text = read(name)
    assert find_loop(text, CFG) is None
    assert stream(text, [1, 2, 3, 5, 8, 13]) is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), big=st.booleans())
@pytest.mark.parametrize("name", LOOPS + LEGIT)
def test_random_chunking_gives_the_same_verdict(name: str, seed: int, big: bool) -> None:
    text = read(name)
    rng = random.Random(seed)
    sizes = [rng.choice([1, 2, 3, 4, 7, 16, 300 if big else 5]) for _ in range(64)]
    whole = find_loop(text, CFG)
    hit = stream(text, sizes)
    assert (hit is None) == (whole is None)
    if hit is not None and whole is not None:
        assert (hit.kind, hit.offset, hit.period) == (whole.kind, whole.offset, whole.period)


@pytest.mark.parametrize(
    ("unit", "copies", "looped"),
    [
        ("I am not sure what to do next, so let me think again. ", 3, False),
        ("I am not sure what to do next, so let me think again. ", 4, True),
        ("我需要再确认一下这个数字是否准确。", 4, False),  # 68 characters: under min_loop_chars
        ("我需要再确认一下这个数字是否准确。", 5, True),
        ("-", 511, False),
        ("-", 512, True),
        ("| ✓ ", 120, False),
        ("| ✓ ", 128, True),
    ],
)
def test_thresholds(unit: str, copies: int, looped: bool) -> None:
    hit = find_loop("Intro: " + unit * copies, CFG)
    assert (hit is not None) == looped
    if hit is not None:
        assert hit.kind == "exact"
        assert hit.period == len(unit)
        assert hit.repeats >= CFG.min_repeats


def test_cut_offset_keeps_exactly_the_certain_copies() -> None:
    unit = "Let me check the answer again carefully. "
    text = "So the answer is 42. " + unit * 50
    hit = find_loop(text, CFG)
    assert hit is not None
    # The periodic span may start a few characters early ("42. " ends like the unit): a rotation.
    assert len("So the answer is 42. ") - len(unit) < hit.start <= len("So the answer is 42. ")
    assert hit.offset == hit.start + CFG.min_repeats * len(unit)
    assert text[hit.start : hit.offset].count("Let me check") == CFG.min_repeats


def test_near_duplicates_need_long_prose_units_outside_code_fences() -> None:
    para = "Wait, let me reconsider the problem. If x = {i}, the total is {j} apples, which is not 17.\n"
    body = "".join(para.format(i=i, j=3 * i) for i in range(12))
    cfg = CFG.model_copy(update={"similar_enabled": False})  # the digit-only rule on its own
    hit = find_loop("Thinking.\n" + body, cfg)
    assert hit is not None
    assert hit.kind == "near_dup"
    assert hit.repeats == CFG.near_dup_min_repeats
    assert find_loop("Code:\n```text\n" + body + "```\n", cfg) is None
    assert find_loop("Thinking.\n" + body, cfg.model_copy(update={"near_dup_min_unit_chars": 200})) is None
    assert find_loop("Thinking.\n" + body, cfg.model_copy(update={"near_dup_min_repeats": 13})) is None


def test_block_longer_than_the_character_window_is_found_by_lines() -> None:
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
    block = "".join(" ".join(rng.choices(words, k=8)) + ".\n" for _ in range(40))
    assert len(block) > 4 * CFG.max_period_chars
    hit = find_loop("Report:\n" + block * 6, CFG)
    assert hit is not None
    assert hit.kind == "exact"
    assert hit.period_lines == 40
    # Certain by the end of the fourth copy; its first line may count one line late.
    assert 4 * len(block) <= hit.offset <= len("Report:\n") + 4 * len(block) + 64


def test_state_stays_bounded_and_cost_does_not_depend_on_length() -> None:
    rng = random.Random(3)
    # English words and one to three Chinese characters: prose that never repeats a sentence.
    hanzi = [c for c in read("legit_reasoning_zh.txt") if "\u4e00" <= c <= "\u9fff"]
    words = read("legit_reasoning_en.txt").split() + [
        "".join(rng.choices(hanzi, k=rng.randint(1, 3))) for _ in range(300)
    ]
    detector = LoopDetector(CFG)
    sizes: list[int] = []
    for _ in range(30_000):
        chunk = rng.choice(words) + rng.choice([" ", " ", ". ", "\n"])
        assert detector.feed(chunk) is None
        sizes.append(detector.footprint())
    assert detector.consumed > 100_000
    assert max(sizes) < 40_000
    assert max(sizes[-5000:]) <= max(sizes[:5000]) * 1.5


def test_disabled_section_finds_nothing() -> None:
    assert find_loop("哈" * 500, CFG.model_copy(update={"enabled": False})) is None


def test_hit_is_reported_once() -> None:
    detector = LoopDetector(CFG)
    assert detector.feed("哈" * 200) is not None
    assert detector.feed("哈" * 200) is None
    assert detector.finish() is None

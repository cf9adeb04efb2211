"""Paraphrased loops (``loop_similar.py``): the corpus of recheck, quantity and long-period loops in
Chinese and English is caught by the occurrence its manifest names, never before the third copy
starts; clean repetitive texts near the boundary pass; verdicts do not depend on chunking."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.guardrails.loop_similar import SimilarUnits
from gateway.guardrails.loops import LoopDetector, LoopHit, find_loop
from gateway.policy.sections import LoopsSection

CORPUS = Path(__file__).parent / "loop_corpus"
MANIFEST: dict[str, dict[str, object]] = json.loads((CORPUS / "loops.json").read_text(encoding="utf-8"))
SIMILAR = sorted(n for n in MANIFEST if "caught_by" in MANIFEST[n])
CLEAN = sorted(p.name for p in CORPUS.glob("legit_*"))
CFG = LoopsSection()


def read(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def stream(text: str, sizes: list[int], cfg: LoopsSection = CFG) -> LoopHit | None:
    detector = LoopDetector(cfg)
    pos = i = 0
    while pos < len(text):
        size = sizes[i % len(sizes)]
        hit = detector.feed(text[pos : pos + size])
        if hit is not None:
            return hit
        pos += size
        i += 1
    return detector.finish()


def occurrence(name: str, offset: int) -> int:
    """Which copy the cut falls in: 1 + the copies ending before it (a copy's line break counts)."""
    ends = MANIFEST[name]["ends"]
    assert isinstance(ends, list)
    return 1 + sum(1 for end in ends if offset > end + 2)


def test_corpus_covers_every_kind_language_and_field() -> None:
    cases = [MANIFEST[n] for n in SIMILAR]
    assert {c["kind"] for c in cases} == {"recheck", "quantity", "long"}
    assert {c["field"] for c in cases} == {"content", "reasoning"}
    for lang in ("_zh_", "_en_"):
        assert {MANIFEST[n]["kind"] for n in SIMILAR if lang in n} == {"recheck", "quantity", "long"}
    units = [int(MANIFEST[n]["ends"][1]) - int(MANIFEST[n]["ends"][0]) for n in SIMILAR]  # type: ignore[index]
    assert max(units) >= 1_000
    assert sum(u >= 400 for u in units) >= 4
    assert all(MANIFEST[n]["caught_by"] in (3, 4) for n in SIMILAR)


@pytest.mark.parametrize("name", SIMILAR)
def test_paraphrased_loop_is_caught_by_its_occurrence(name: str) -> None:
    text = read(name)
    hit = stream(text, [3, 1, 4, 1, 5, 9, 2, 6])
    assert hit is not None, name
    assert hit.kind == "similar"
    assert 3 <= occurrence(name, hit.offset) <= int(MANIFEST[name]["caught_by"])  # type: ignore[call-overload]
    assert hit.start < int(MANIFEST[name]["ends"][1])  # type: ignore[index]  # the chain began by the 2nd copy
    assert CFG.similar_threshold <= hit.similarity <= 1
    assert hit.repeats >= 3


@pytest.mark.parametrize("name", CLEAN)
def test_clean_repetitive_text_passes(name: str) -> None:
    text = read(name)
    assert find_loop(text, CFG) is None
    assert stream(text, [1, 2, 3, 5, 8, 13]) is None


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
@pytest.mark.parametrize("name", SIMILAR)
def test_random_chunking_gives_the_same_verdict(name: str, seed: int) -> None:
    text = read(name)
    rng = random.Random(seed)
    sizes = [rng.choice([1, 2, 3, 4, 7, 16, 90]) for _ in range(64)]
    whole = find_loop(text, CFG)
    hit = stream(text, sizes)
    assert hit is not None and whole is not None
    assert (hit.kind, hit.offset, hit.period, hit.repeats) == (
        whole.kind,
        whole.offset,
        whole.period,
        whole.repeats,
    )


def test_policy_threshold_decides() -> None:
    text = read("loop_sim_en_recheck.txt")
    assert find_loop(text, CFG) is not None
    assert find_loop(text, CFG.model_copy(update={"similar_threshold": 0.9, "similar_certain": 0.95})) is None
    assert find_loop(text, CFG.model_copy(update={"similar_enabled": False})) is None


def test_certain_chains_are_cut_at_the_third_copy_others_at_the_fourth() -> None:
    unit = "Wait, let me double-check the sum of the invoice lines: {a} plus {b} gives {c}, which matches the total. "
    text = "".join((unit + "But the tax might be wrong.\n").format(a=i, b=2 * i, c=3 * i) for i in range(8))
    hit = find_loop(text, CFG)
    assert hit is not None
    assert (hit.kind, hit.repeats) == ("similar", 3)
    assert hit.offset == len(text.split("\n")[0]) * 3 + 3  # the end of the third line, its break included
    loose = CFG.model_copy(update={"similar_certain": 1.0})
    variants = ["But the tax might be wrong.", "Hmm, the tax may be wrong.", "Yet the tax could be off."]
    text = "".join(unit.format(a=i, b=2 * i, c=3 * i) + variants[i % 3] + "\n" for i in range(8))
    hit = find_loop(text, loose)
    assert hit is not None
    assert hit.repeats == 4


def test_unit_memory_is_bounded() -> None:
    rng = random.Random(5)
    words = [
        "the",
        "a",
        "model",
        "gateway",
        "policy",
        "token",
        "stream",
        "check",
        "loop",
        "budget",
        "request",
        "client",
        "engine",
        "span",
    ]
    detector = SimilarUnits(CFG)
    marks = []
    for i in range(4000):
        line = " ".join(rng.choices(words, k=30)) + f" {i}.\n"
        assert detector.feed(line) is None
        marks.append(detector.footprint())
    assert max(marks[-500:]) <= max(marks[:500]) * 1.5 + 2_000
    assert max(marks) < 20_000

"""Guardrails benchmark: normalise + scan throughput, per-chunk stream cost, automaton compile time.

Run: .venv/bin/python tests/perf/bench_guardrails.py

10,000 list entries (5,000 Chinese, 5,000 English). Targets: >= 20 MB/s normalise + scan of Chinese
text, <= 10 us median per 1-4 character stream delta, < 1 s to compile 10,000 words.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gateway.guardrails import (
    CompiledGuardrails,
    Normalizer,
    PassThrough,
    StreamCheck,
    compile_guardrails,
)
from gateway.policy.sections import GuardrailsSection, PolicyBundle
from tests.support.normalizer import shared_normalizer

ROOT = Path(__file__).resolve().parents[2]
RANGE = [chr(c) for c in range(0x4E00, 0x4E00 + 4000)]
PUNCT = "，。、；：？！“”"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def simplified() -> list[str]:
    """Characters the normaliser keeps as they are: simplified Chinese text."""
    norm = shared_normalizer()
    return [c for c in RANGE if norm.char(c) == c][:3500]


def word_lists(rng: random.Random) -> tuple[list[str], list[str]]:
    chinese = sorted({"".join(rng.choices(simplified(), k=rng.randint(2, 6))) for _ in range(5000)})
    english = sorted({"".join(rng.choices(LETTERS, k=rng.randint(4, 12))) for _ in range(5000)})
    return chinese[:5000], english[:5000]


def chinese_text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    common = simplified()
    while len(out) < chars:
        out.extend(rng.choices(common, k=rng.randint(6, 20)))
        out.append(rng.choice(PUNCT))
    return "".join(out[:chars])


def bundle(words: list[str], with_pii: bool) -> PolicyBundle:
    rules: list[dict[str, object]] = [
        {"id": "w.zh", "kind": "words", "category": "c", "action": "block", "lists": ["zh"]},
        {"id": "w.en", "kind": "words", "category": "c", "action": "mask", "lists": ["en"]},
    ]
    if with_pii:
        import yaml

        rules += [
            r
            for r in yaml.safe_load((ROOT / "policies/default/guardrails.yaml").read_text())["rules"]
            if r["kind"] == "pattern"
        ]
    half = len(words) // 2
    return PolicyBundle(
        guardrails=GuardrailsSection.model_validate({"rules": rules}),
        word_lists={"zh": tuple(words[:half]), "en": tuple(words[half:])},
    )


def throughput(g: CompiledGuardrails, text: str, repeat: int = 3) -> float:
    size = len(text.encode())
    best = min(_timed(lambda: g.hits(text, "input")) for _ in range(repeat))
    return size / best / 1e6


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def chunk_costs(make_check: Callable[[], StreamCheck], text: str, rng: random.Random) -> list[float]:
    """Microseconds of each ``feed`` of 1-4 character deltas; a stopped stream starts a fresh check."""
    check = make_check()
    costs: list[float] = []
    pos = 0
    clock = time.perf_counter_ns
    while pos < len(text):
        size = rng.randint(1, 4)
        delta = text[pos : pos + size]
        pos += size
        t0 = clock()
        result = check.feed("content", delta)
        costs.append((clock() - t0) / 1000)
        if result.stop is not None:
            check = make_check()
    return costs


def main() -> None:
    print(
        f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures scale with it)"
    )
    rng = random.Random(7)
    t0 = time.perf_counter()
    norm = Normalizer()
    print(f"normaliser table, once per process:            {time.perf_counter() - t0:8.3f} s")
    zh, en = word_lists(rng)
    words = zh + en
    plain = bundle(words, with_pii=False)
    t0 = time.perf_counter()
    g_words = compile_guardrails(plain, norm)
    print(f"compile 10,000 words (normalise + automata):   {time.perf_counter() - t0:8.3f} s")
    g_pii = compile_guardrails(bundle(words, with_pii=True), norm)

    text = chinese_text(rng, 400_000)
    # one traditional or full-width character in 20: the translating path
    mixed = "".join("們" if i % 40 == 0 else "Ａ" if i % 40 == 20 else c for i, c in enumerate(text))
    prompt = text[:48_000]  # about 32K tokens of Chinese
    print(f"Chinese text, words:                           {throughput(g_words, text):8.1f} MB/s")
    print(f"Chinese text with traditional/full-width:      {throughput(g_words, mixed):8.1f} MB/s")
    print(f"Chinese text, words + 6 default pattern rules: {throughput(g_pii, text):8.1f} MB/s")
    best = min(_timed(lambda: g_pii.hits(prompt, "input")) for _ in range(5))
    print(f"32K-token prompt (48,000 chars), all rules:    {best * 1000:8.2f} ms")

    stream_text = chinese_text(rng, 60_000)
    # English prose-like text: random words, a list word now and then (1 in 200)
    english = " ".join(
        rng.choice(en) if i % 200 == 0 else "".join(rng.choices(LETTERS, k=rng.randint(2, 9)))
        for i in range(8000)
    )
    floor = statistics.median(
        chunk_costs(PassThrough, stream_text, rng)
    )  # what any check is measured against
    print(f"stream 1-4 char deltas, pass-through check (floor)    median {floor:5.2f} us")
    for name, g, sample in (
        ("words, Chinese", g_words, stream_text),
        ("words, English", g_words, english),
        ("words + PII, Chinese", g_pii, stream_text),
        # every word could begin an e-mail address: the pattern rules' partial-match path on each delta
        ("words + PII, English", g_pii, english),
    ):
        costs = chunk_costs(partial(g.stream_check, None), sample, rng)
        costs.sort()
        p90 = costs[int(len(costs) * 0.9)]
        print(
            f"stream 1-4 char deltas, {name:22s} median {statistics.median(costs):5.2f} us"
            f"  p90 {p90:5.2f} us  mean {statistics.fmean(costs):5.2f} us  ({len(costs)} chunks)"
        )


if __name__ == "__main__":
    main()

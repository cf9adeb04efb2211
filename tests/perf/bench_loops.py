"""Loop detector benchmark: cost per chunk, its flatness over output length, memory per stream.

Run: PYTHONPATH=. .venv/bin/python tests/perf/bench_loops.py
Chunks are 1-16 characters (1-4 tokens) of mixed English and Chinese prose that never loops, so the
detector does its full work on every chunk (tail search, sentence hashing) without stopping.
"""

from __future__ import annotations

import random
import statistics
import time
import tracemalloc

from gateway.guardrails.loop_check import LoopCheck
from gateway.guardrails.loops import LoopDetector
from gateway.policy.sections import LoopsSection

_EN_TEXT = (
    "the model reads each request and checks the policy before it forwards the prompt to the engine "
    "while the gateway counts tokens records spans and keeps every stream inside its budget "
    "so that no client can starve another one and the audit trail stays complete"
)
EN = _EN_TEXT.split(" ")
ZH = list("模型读取每个请求并在转发提示之前检查策略网关统计令牌记录跨度并让每个流都保持在预算之内审计记录")
PUNCT = [", ", ". ", ".\n", "。", "，", "\n\n", "? "]


def prose_chunks(n_chars: int, seed: int = 7) -> list[str]:
    """Token-sized chunks of text that never repeats a sentence."""
    rng = random.Random(seed)
    chunks: list[str] = []
    total = 0
    serial = 0
    while total < n_chars:
        zh = rng.random() < 0.3
        chunk = "".join(rng.choices(ZH, k=rng.randint(1, 4))) if zh else rng.choice(EN) + " "
        if rng.random() < 0.08:
            serial += 1
            chunk += f"{serial}{rng.choice(PUNCT)}"
        chunks.append(chunk[:16])
        total += len(chunks[-1])
    return chunks


def time_chunks(feed: object, chunks: list[str]) -> list[float]:
    """Microseconds per call of ``feed(chunk)``."""
    call = feed  # bound method
    clock = time.perf_counter_ns
    out: list[float] = []
    for chunk in chunks:
        t0 = clock()
        call(chunk)  # type: ignore[operator]
        out.append((clock() - t0) / 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    cfg = LoopsSection()
    chunks = prose_chunks(110_000)
    sizes = [len(c) for c in chunks]
    print(f"stream: {len(chunks)} chunks, {sum(sizes)} chars, median chunk {statistics.median(sizes)} chars")

    # Per-chunk cost, detector alone and through the StreamCheck adapter (3 runs, best median).
    runs = []
    for _ in range(3):
        det = LoopDetector(cfg)
        runs.append(time_chunks(det.feed, chunks))
    best = min(runs, key=statistics.median)
    print(
        f"LoopDetector.feed: median {statistics.median(best):.2f} us, p90 {pct(best, 0.9):.2f} us, "
        f"p99 {pct(best, 0.99):.2f} us, mean {statistics.fmean(best):.2f} us per chunk (wall clock)"
    )
    # The machine is shared: CPU time of the whole stream, untimed per call, is the steadier mean.
    cpu = []
    for _ in range(3):
        det = LoopDetector(cfg)
        c0 = time.process_time()
        for chunk in chunks:
            det.feed(chunk)
        cpu.append((time.process_time() - c0) / len(chunks) * 1e6)
    print(f"LoopDetector.feed: mean {min(cpu):.2f} us CPU per chunk (best of 3, no per-call timer)")
    check = LoopCheck(cfg)
    adapter = time_chunks(lambda c: check.feed("content", c), chunks)
    print(f"LoopCheck.feed:    median {statistics.median(adapter):.2f} us per chunk")

    # Flatness: cost of the chunks around 1K, 10K and 100K characters of output.
    print("cost per chunk by output length (median of the 500 chunks after the mark):")
    offsets = []
    pos = 0
    for size in sizes:
        offsets.append(pos)
        pos += size
    for mark in (1_000, 10_000, 100_000):
        i = next(k for k, off in enumerate(offsets) if off >= mark)
        window = best[i : i + 500]
        print(f"  {mark:>7,} chars: {statistics.median(window):.2f} us  (p90 {pct(window, 0.9):.2f})")

    # A stream stuck in a loop that never reaches the threshold: the period-tracking path.
    tracking = LoopsSection(min_repeats=10_000)
    unit = "I need to make sure the summary is accurate. "
    loop_text = unit * 400
    loop_chunks = [loop_text[i : i + 4] for i in range(0, len(loop_text), 4)]
    det = LoopDetector(tracking)
    inside = time_chunks(det.feed, loop_chunks)
    print(f"inside a loop (period tracked): median {statistics.median(inside):.2f} us per chunk")

    # Memory per stream: growing state and everything allocated for one detector.
    print("memory per field (content or reasoning), after N characters of output:")
    for mark in (1_000, 10_000, 100_000):
        tracemalloc.start()
        det = LoopDetector(cfg)
        fed = 0
        for chunk in chunks:
            det.feed(chunk)
            fed += len(chunk)
            if fed >= mark:
                break
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"  {mark:>7,} chars: state {det.footprint():,} B (tail + arrays), "
            f"traced live {current:,} B, peak {peak:,} B"
        )


def language_chunks(n_chars: int, zh: bool, seed: int = 11) -> list[str]:
    """Engine-sized chunks (a token or two) of loop-free prose in one language, lines of 1-3 sentences."""
    rng = random.Random(seed)
    chunks: list[str] = []
    total = serial = 0
    while total < n_chars:
        chunk = "".join(rng.choices(ZH, k=rng.randint(1, 2))) if zh else rng.choice(EN) + " "
        if rng.random() < 0.06:
            serial += 1
            chunk += f"{serial}" + rng.choice(["。", "，", "。\n\n"] if zh else [". ", ", ", ".\n\n"])
        chunks.append(chunk)
        total += len(chunk)
    return chunks


def cpu_per_chunk(chunks: list[str], cfg: LoopsSection, start: int, count: int) -> float:
    """Mean CPU microseconds per chunk for chunks[start:start+count], after feeding the ones before."""
    best = float("inf")
    for _ in range(3):
        det = LoopDetector(cfg)
        for chunk in chunks[:start]:
            det.feed(chunk)
        c0 = time.process_time()
        for chunk in chunks[start : start + count]:
            det.feed(chunk)
        best = min(best, (time.process_time() - c0) / count * 1e6)
    return best


def by_language() -> None:
    """CPU per chunk at 1K, 10K and 100K characters of output, Chinese and English, with and
    without the similarity rule (loop-free text: every rule does its full work, nothing is cut)."""
    print("mean CPU per chunk around each mark (5,000 chunks from the mark; best of 3):")
    for zh in (False, True):
        chunks = language_chunks(160_000, zh)
        offsets = [0]
        for c in chunks:
            offsets.append(offsets[-1] + len(c))
        median = statistics.median(len(c) for c in chunks)
        for label, cfg in (
            ("all rules", LoopsSection()),
            ("no similarity", LoopsSection(similar_enabled=False)),
        ):
            figures = []
            for mark in (1_000, 10_000, 100_000):
                i = next(k for k, off in enumerate(offsets) if off >= mark)
                figures.append(f"{mark // 1000}K {cpu_per_chunk(chunks, cfg, i, 5_000):.2f} us")
            lang = "zh" if zh else "en"
            print(f"  {lang} ({median:.0f} chars/chunk), {label:>13}: " + ", ".join(figures))


if __name__ == "__main__":
    main()
    by_language()

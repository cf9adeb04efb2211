"""Pattern rules: `regex` patterns with a per-call timeout, confirmed by an optional validator.

Patterns see the text with full-width ASCII folded to ASCII (``１３８…`` is a phone number too); the
fold is one character for one, so match offsets are offsets into the original text.

A pattern that times out never hangs the gateway: the scan reports a timed-out match over the
scanned span and the rule fails closed (see `compiled`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import regex

from gateway.guardrails.validators import VALIDATORS

_FULLWIDTH = re.compile("[\uff01-\uff5e\u3000]")
TIMEOUT_ATTEMPTS = 3  # a scan fails closed only when every attempt times out


@functools.cache
def _fold_table() -> dict[int, int]:
    table = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
    table[0x3000] = 0x20
    return table


def fold_width(text: str) -> str:
    """Full-width ASCII and the ideographic space to ASCII; same length as ``text``."""
    if _FULLWIDTH.search(text) is None:
        return text
    return text.translate(_fold_table())


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    rule: int
    regex: regex.Pattern[str]
    validate: Callable[[str], bool] | None


@dataclass(frozen=True, slots=True)
class PatternMatch:
    """A confirmed match of pattern ``pattern`` at ``[start, end)``; ``timed_out`` covers the scanned span."""

    pattern: int
    start: int
    end: int
    timed_out: bool = False


def compile_pattern(rule: int, pattern: str, ignore_case: bool, validator: str | None) -> CompiledPattern:
    flags = regex.IGNORECASE if ignore_case else 0
    return CompiledPattern(rule, regex.compile(pattern, flags), VALIDATORS[validator] if validator else None)


def scan_text(patterns: tuple[CompiledPattern, ...], text: str, timeout: float) -> list[PatternMatch]:
    """Every confirmed match of every pattern in a whole text (leftmost, non-overlapping per pattern)."""
    folded = fold_width(text)
    found: list[PatternMatch] = []
    for i, pattern in enumerate(patterns):
        matches, _ = scan_from(pattern, i, folded, 0, 0, None, timeout)
        found.extend(matches)
    return found


def scan_from(
    pattern: CompiledPattern,
    index: int,
    folded: str,
    base: int,
    pos: int,
    limit: int | None,
    timeout: float,
) -> tuple[list[PatternMatch], int]:
    """Matches starting in ``[pos, limit)`` (absolute offsets; ``folded`` starts at ``base``).

    Returns the matches and where the next scan resumes: after the last match, or ``limit``. With
    ``limit`` None the text is complete and every match counts. Context before ``pos`` stays in
    ``folded`` so that look-behinds see it.

    The timeout is wall-clock: on a busy host even a trivial match is sometimes descheduled past it.
    A scan is retried, and only a pattern that times out on every attempt fails closed, so that load
    alone does not cut clean streams while a pattern that really hangs still blocks.
    """
    for _ in range(TIMEOUT_ATTEMPTS):
        try:
            return _scan(pattern, index, folded, base, pos, limit, timeout)
        except TimeoutError:
            continue
    stop = base + len(folded) if limit is None else limit
    return [PatternMatch(index, pos, max(stop, pos + 1), timed_out=True)], stop


def _scan(
    pattern: CompiledPattern,
    index: int,
    folded: str,
    base: int,
    pos: int,
    limit: int | None,
    timeout: float,
) -> tuple[list[PatternMatch], int]:
    found: list[PatternMatch] = []
    resume = pos
    # concurrent=False keeps the GIL: a scan is microseconds, and releasing it would make each match wait
    # for other threads (reloads, exporters), turning a busy process into false timeouts.
    for m in pattern.regex.finditer(folded, pos - base, timeout=timeout, concurrent=False):
        start, end = m.start() + base, m.end() + base
        if limit is not None and start >= limit:
            break
        resume = end
        if end == start:
            continue
        if pattern.validate is None or pattern.validate(m.group()):
            found.append(PatternMatch(index, start, end))
    if limit is not None:
        resume = max(resume, limit)
    return found, resume


__all__ = [
    "TIMEOUT_ATTEMPTS",
    "CompiledPattern",
    "PatternMatch",
    "compile_pattern",
    "fold_width",
    "scan_from",
    "scan_text",
]

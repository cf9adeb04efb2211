"""Pattern rules: `regex` patterns with a per-call timeout, confirmed by an optional validator.

Patterns see the text with full-width ASCII folded to ASCII (``１３８…`` is a phone number too); the
fold is one character for one, so match offsets are offsets into the original text.

A pattern that times out never hangs the gateway: the scan reports a timed-out match over the
scanned span and the rule fails closed (see `compiled`).

On a stream, `advance` uses the `regex` module's partial matching to tell which matches are final:
one whose every path of the matcher stays inside the text is, and the earliest position from which
a path reaches the end of the text (a match still in progress) is where the stream holds back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import regex
from regex import Pattern

from gateway.guardrails.syntax import read_syntax
from gateway.guardrails.validators import VALIDATORS
from gateway.policy.patterns import probes_for

_FULLWIDTH = re.compile("[\uff01-\uff5e\u3000]")
TIMEOUT_ATTEMPTS = 3  # a scan fails closed only when every attempt times out
_PLAIN_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.ASCII | regex.VERSION0
_REACH_PROBE_S = 0.005  # what one `reach` search may take at policy load before the pattern goes without it


# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space to their ASCII forms.
_FOLD_TABLE: Final = MappingProxyType({**{cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}, 0x3000: 0x20})


def fold_width(text: str) -> str:
    """Full-width ASCII and the ideographic space to ASCII; same length as ``text``."""
    if _FULLWIDTH.search(text) is None:
        return text
    return text.translate(_FOLD_TABLE)


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    """``starts``: one character a match can start with (None: any); ``reach``: see `_reach_from`
    (None: partial matching is not sound for this pattern, see `syntax`)."""

    rule: int
    regex: regex.Pattern[str]
    validate: Callable[[str], bool] | None
    starts: Pattern[str] | None = None  # `Pattern`: the field ``regex`` hides the module here
    reach: Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class PatternMatch:
    """A confirmed match of pattern ``pattern`` at ``[start, end)``; ``timed_out`` covers the scanned span."""

    pattern: int
    start: int
    end: int
    timed_out: bool = False


def compile_pattern(
    rule: int,
    pattern: str,
    ignore_case: bool,
    validator: str | None,
    max_chars: int = 64,
    *,
    probe_reach: bool = True,
) -> CompiledPattern:
    flags = regex.IGNORECASE if ignore_case else 0
    compiled = regex.compile(pattern, flags)
    syntax = read_syntax(pattern)
    starts = None if syntax.starts is None else regex.compile(syntax.starts, flags)
    reach = None
    if syntax.partial and not compiled.flags & ~_PLAIN_FLAGS:
        # the pattern, then a character that can never match: no complete match, only partial ones,
        # which show where a path of the pattern reaches the end of the text
        reach = regex.compile(f"(?:{pattern})(?=[\\s\\S])(?!)", flags)
        if probe_reach and _reach_is_slow(reach, pattern, max_chars):
            reach = None
    return CompiledPattern(rule, compiled, VALIDATORS[validator] if validator else None, starts, reach)


def _reach_is_slow(reach: regex.Pattern[str], pattern: str, max_chars: int) -> bool:
    """Whether `reach` can take long on the text a stream holds (about ``2 * max_chars`` characters).

    `reach` never matches, so the engine tries every way the pattern can split the text: exponential for
    a pattern such as ``(?:\\d{1,4}[ -]?){4,12}`` on a run of digits, where a plain search stops at once.
    Such a pattern is scanned the conservative way instead (held from its first start character).
    """
    size = 2 * max_chars
    for probe in probes_for(pattern):
        text = (probe * (size // max(len(probe), 1) + 1))[:size]
        try:
            reach.search(text, partial=True, timeout=_REACH_PROBE_S, concurrent=False)
        except TimeoutError:
            return True
    return False


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


def advance(
    pattern: CompiledPattern,
    index: int,
    folded: str,
    base: int,
    pos: int,
    settled: int,
    timeout: float,
) -> tuple[list[PatternMatch], int]:
    """Final matches from ``pos`` on a text that may still grow, and where the first open one starts.

    ``folded`` (starting at absolute ``base``) is the text so far; a scan resumes at ``pos``. Matches
    starting before the returned point are known and final whatever text follows; a match from that
    point on may still appear or change. Matches starting before ``settled`` count as final anyway:
    `max_pattern_chars` bounds what a pattern reads, and so the hold-back. A search that times out on
    every attempt fails closed, as in `scan_from`: a timed-out match over the rest of the text.

    Where partial matching is not sound, every match from ``settled`` on stays open: the point is the
    first character from there that can start a match.
    """
    found: list[PatternMatch] = []
    if pos < settled:
        found, pos = scan_from(pattern, index, folded, base, pos, settled, timeout)
        if found and found[-1].timed_out:
            return found, pos
    end = base + len(folded)
    reach = pattern.reach
    if reach is None:
        if pattern.starts is None:
            return found, pos
        m = pattern.starts.search(folded, pos - base)
        return found, end if m is None else m.start() + base
    while True:
        try:
            # a complete match, if there is one, comes first; else the leftmost match still in progress
            m = _search(pattern.regex, folded, pos - base, timeout)
            if m is None:
                return found, end
            if m.partial:
                return found, m.start() + base
        except TimeoutError:
            found.append(PatternMatch(index, pos, max(end, pos + 1), timed_out=True))
            return found, end
        try:
            # a complete match: is it final? Only once no path of the matcher reaches the end of the text
            # (a longer match, a look-ahead), and an earlier match in progress may have been passed over
            hold = _reach_from(reach, folded, base, pos, timeout)
        except TimeoutError:
            # `reach` only tells how much may be released: too slow here, release nothing from ``pos``
            # on; `settled` finalises these matches with plain scans, so nothing fails closed for it
            return found, pos
        if hold <= pos:
            return found, pos
        more, pos = scan_from(pattern, index, folded, base, pos, hold, timeout)
        found += more
        if pos <= hold:  # also after a timed-out scan, which resumes at its limit
            return found, pos
        # the match in progress lay inside a final match, which the scan resumes after


def _reach_from(reach: regex.Pattern[str], folded: str, base: int, pos: int, timeout: float) -> int:
    """The leftmost position from ``pos`` where a path of the pattern reaches the end of the text.

    One attempt: a timeout is not a verdict here (see `advance`), so it is not retried.
    """
    m = reach.search(folded, pos - base, partial=True, timeout=timeout, concurrent=False)
    return base + (len(folded) if m is None else m.start())


def _search(rx: regex.Pattern[str], folded: str, pos: int, timeout: float) -> regex.Match[str] | None:
    """A partial-matching search, retried like `scan_from`; raises TimeoutError when every attempt does."""
    for _ in range(TIMEOUT_ATTEMPTS - 1):
        try:
            return rx.search(folded, pos, partial=True, timeout=timeout, concurrent=False)
        except TimeoutError:
            continue
    return rx.search(folded, pos, partial=True, timeout=timeout, concurrent=False)


__all__ = [
    "TIMEOUT_ATTEMPTS",
    "CompiledPattern",
    "PatternMatch",
    "advance",
    "compile_pattern",
    "fold_width",
    "scan_from",
    "scan_text",
]

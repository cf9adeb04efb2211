"""Pattern rule checks: the pattern compiles, matches no empty string, and is not catastrophically slow.

Slowness is tested the way it would bite in production: every probe must be matched within the same
per-match timeout the guardrails use (``pattern_timeout_ms``), holding the GIL as the guardrails do
(``concurrent=False``): a reload runs beside request threads, and a match that released the GIL would wait
for them and look slow. A probe over budget twice in a row marks the pattern as slow.
"""

from __future__ import annotations

import regex

_PROBE_LEN = 5000
_WALL_CAP = (
    20.0  # wall time allowed per CPU-time budget: generous, a contended thread may run 1/N of the time
)
_GENERIC_PROBES: tuple[str, ...] = (
    "a" * _PROBE_LEN + "!",
    "1" * _PROBE_LEN + "x",
    "a1" * (_PROBE_LEN // 2) + "!",
    " " * _PROBE_LEN + "!",
    "a " * (_PROBE_LEN // 2) + "!",
    "1 " * (_PROBE_LEN // 2) + "x",
    "a." * (_PROBE_LEN // 2) + "!",
    "a@" * (_PROBE_LEN // 2) + "!",
    "@" * _PROBE_LEN,
    "中" * (_PROBE_LEN // 2) + "!",
    "aA0_-" * (_PROBE_LEN // 5) + "\x00",
)
_LITERAL_RUN = regex.compile(r"[\p{L}\p{N}]+")
_MAX_DERIVED = 12


def compile_pattern(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    """Compile a pattern rule the way the loader validates it."""
    return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)


def probes_for(pattern: str) -> list[str]:
    """Generic adversarial inputs plus long repeats of the pattern's own literal runs and characters."""
    derived: dict[str, None] = {}
    for run in _LITERAL_RUN.findall(pattern):
        derived.setdefault(run, None)
        for ch in run:
            derived.setdefault(ch, None)
    extra = [unit * (_PROBE_LEN // len(unit)) + "\x00" for unit in list(derived)[:_MAX_DERIVED]]
    return [*_GENERIC_PROBES, *extra]


def pattern_problem(pattern: str, ignore_case: bool, timeout_ms: float) -> str | None:
    """Why this pattern may not be used, or None if it is fine."""
    try:
        compiled = compile_pattern(pattern, ignore_case)
    except regex.error as exc:
        return f"pattern does not compile: {exc}"
    if compiled.search("") is not None:
        return "pattern matches the empty string"
    timeout = timeout_ms / 1000.0
    for probe in probes_for(pattern):
        if _times_out(compiled, probe, timeout) and _times_out(compiled, probe, timeout):
            return (
                f"pattern is catastrophically slow: a {len(probe)}-character probe exceeded "
                f"the {timeout_ms:g} ms match timeout (nested or overlapping quantifiers?)"
            )
    return None


def _times_out(compiled: regex.Pattern[str], probe: str, timeout: float) -> bool:
    try:
        # One call into the regex engine: a Python-level finditer loop would wait for the GIL between matches.
        compiled.findall(probe, timeout=timeout, concurrent=False)
    except TimeoutError:
        return True
    return False


__all__ = ["compile_pattern", "pattern_problem", "probes_for"]

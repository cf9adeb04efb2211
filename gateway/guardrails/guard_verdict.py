"""Qwen3Guard-Gen's verdict format, as a regex the engine constrains its answer to, and a strict parser.

A prompt verdict is two lines, a response verdict three::

    Safety: Unsafe
    Categories: Violent, PII
    Refusal: No

The engine is asked for structured output matching `verdict_regex` (vLLM ``structured_outputs.regex``), so a
well-behaved engine always answers in this shape; anything else is a guard error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Safety = Literal["Safe", "Unsafe", "Controversial"]

# The categories Qwen3Guard-Gen names (its model card); ``Jailbreak`` only for prompts.
CATEGORIES: tuple[str, ...] = (
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
    "None",
)


class VerdictFormatError(ValueError):
    """The guard's answer is not a verdict."""


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    safety: Safety
    categories: tuple[str, ...]
    refusal: bool | None = None


def verdict_regex(*, response: bool) -> str:
    """The grammar of a verdict: with the ``Refusal`` line when a response is classified."""
    cat = "(" + "|".join(re.escape(c) for c in CATEGORIES) + ")"
    body = rf"Safety: (Safe|Unsafe|Controversial)\nCategories: {cat}(, {cat})*"
    return body + r"\nRefusal: (Yes|No)" if response else body


_PROMPT = re.compile(verdict_regex(response=False))
_RESPONSE = re.compile(verdict_regex(response=True))


def parse_verdict(text: str, *, response: bool) -> GuardVerdict:
    """The verdict in ``text`` (surrounding whitespace allowed); raises `VerdictFormatError` otherwise."""
    stripped = text.strip()
    if (_RESPONSE if response else _PROMPT).fullmatch(stripped) is None:
        raise VerdictFormatError("guard answer does not match the verdict format")
    lines = stripped.split("\n")
    safety = lines[0].removeprefix("Safety: ")
    categories = tuple(c for c in lines[1].removeprefix("Categories: ").split(", ") if c != "None")
    refusal = lines[2] == "Refusal: Yes" if response else None
    return GuardVerdict(safety, categories, refusal)  # type: ignore[arg-type]  # the regex fixed the literal


__all__ = ["CATEGORIES", "GuardVerdict", "Safety", "VerdictFormatError", "parse_verdict", "verdict_regex"]

"""Word lists: ``lists/NAME.txt``, UTF-8, one entry per line, ``#`` comment lines, blank lines ignored."""

from __future__ import annotations

import unicodedata

from gateway.policy.problems import PolicyError

# Characters that can never be part of a word: they are invisible or break lines, so a word made of
# them would match nothing visible, or everything.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Mn", "Me"})


def word_problem(word: str) -> str | None:
    """Why ``word`` cannot be matched, or None."""
    if "\x00" in word:
        return "word contains a NUL character"
    for ch in word:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES and ch != "\t":
            return f"word contains control character U+{ord(ch):04X}"
    if not word.strip() or all(unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in word):
        return "empty word (only blank or invisible characters)"
    return None


def parse_word_list(text: str, file: str) -> tuple[tuple[str, ...], list[PolicyError]]:
    """Entries of a list file (stripped, duplicates dropped) and the problems, by line."""
    entries: dict[str, None] = {}
    errors: list[PolicyError] = []
    # split on "\n" only: str.splitlines also breaks on U+2028 and friends, which editors do not show
    for number, raw in enumerate(text.split("\n"), start=1):
        entry = raw.rstrip("\r").strip(" \t")
        if not entry or entry.startswith("#"):
            continue
        problem = word_problem(entry)
        if problem is not None:
            errors.append(PolicyError(file, number, problem))
            continue
        entries.setdefault(entry, None)
    return tuple(entries), errors


__all__ = ["parse_word_list", "word_problem"]

"""What a pattern's syntax tells a stream: where a match can start, and whether partial matching is sound.

Start characters: a non-empty match consumes its start character first, so a stream need not look for
a match where none of them occurs (Chinese prose never starts a phone number). They are returned as the
pattern's own source atoms, so the `regex` module gives them the pattern's own meaning.

Partial matching: the `regex` module reports a partial match when a path of the matcher reads past the
end of the text, but not in every case (checked by fuzzing against every continuation of short texts):
word boundaries (``\\b \\B \\m \\M``) and ``$ \\Z`` test the end without reporting it; lazy and possessive
quantifiers, atomic and capturing groups, or a look-behind after (or inside) a quantified item can hide
a partial match. Patterns outside the subset known to be sound are scanned the conservative way.

The parser knows a common subset of the syntax (literals, escapes, classes, groups, alternation,
quantifiers, look-arounds) and answers "unknown" for anything else: back-references, inline flags,
comments, conditionals, nested sets, fuzzy matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import regex

_QUANTIFIER = re.compile(r"\{(\d*)(?:,(\d*))?\}")
_NAMED_GROUP = re.compile(r"\(\?P?<\w+>")
_ZERO_WIDTH = frozenset("bBAZGmM")  # \b \B \A \Z \G \m \M consume nothing; only \A is sound at the end
_CLASS = frozenset("dDwWsS")
_CONTROL = frozenset("afnrtv")
_HEX = {"x": 2, "u": 4, "U": 8}
_ANY = ""  # the start atom of `.`: any character


@dataclass(frozen=True, slots=True)
class Syntax:
    """``starts``: `regex` source for one character a match can start with (None: any character);
    ``partial``: partial matching reports every match that more text could make or change."""

    starts: str | None
    partial: bool


class _Unknown(Exception):
    """Syntax outside the subset."""


class _Parser:
    """Recursive descent returning, per construct, its start atoms and whether it can match empty."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.sound = True
        self.first_repeat = len(pattern)  # where the first quantified item starts
        self.last_lookbehind = -1

    def peek(self, text: str) -> bool:
        return self.p.startswith(text, self.i)

    def alternation(self) -> tuple[list[str], bool]:
        starts, empty = self.sequence()
        while self.peek("|"):
            self.i += 1
            more, more_empty = self.sequence()
            starts += more
            empty = empty or more_empty
        return starts, empty

    def sequence(self) -> tuple[list[str], bool]:
        starts: list[str] = []
        empty = True
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            begin = self.i
            atoms, can_skip = self.atom()
            least = self.quantifier()
            if least is not None:
                self.first_repeat = min(self.first_repeat, begin)
                can_skip = can_skip or least == 0
            if empty:  # every item so far can match empty: this one's start characters can start the match
                starts += atoms
            empty = empty and can_skip
        return starts, empty

    def quantifier(self) -> int | None:
        """The minimum count of a quantifier at the cursor, consumed (with a lazy or possessive mark)."""
        ch = self.p[self.i] if self.i < len(self.p) else ""
        if ch in ("?", "*", "+"):
            self.i += 1
            least = 1 if ch == "+" else 0
        elif ch == "{":
            m = _QUANTIFIER.match(self.p, self.i)
            if m is None or m.group(0) in ("{}", "{,}"):
                raise _Unknown  # a fuzzy constraint or an unusual literal brace
            self.i = m.end()
            least = int(m.group(1) or 0)
        else:
            return None
        if self.i < len(self.p) and self.p[self.i] in "?+":
            self.i += 1
            self.sound = False
        return least

    def group(self, skip: int) -> tuple[list[str], bool]:
        self.i += skip
        inner = self.alternation()
        if not self.peek(")"):
            raise _Unknown
        self.i += 1
        return inner

    def atom(self) -> tuple[list[str], bool]:
        p, i = self.p, self.i
        ch = p[i]
        if ch == "(":
            if p.startswith(("(?=", "(?!"), i):
                self.group(3)
                return [], True
            if p.startswith(("(?<=", "(?<!"), i):
                self.last_lookbehind = i
                self.group(4)
                return [], True
            if p.startswith("(?:", i):
                return self.group(3)
            self.sound = False  # atomic and capturing groups
            if p.startswith("(?>", i):
                return self.group(3)
            named = _NAMED_GROUP.match(p, i)
            if named is not None:
                return self.group(named.end() - i)
            if p.startswith("(?", i):
                raise _Unknown  # inline flags, comments, conditionals, recursion, branch reset
            return self.group(1)
        if ch == "[":
            return [self.char_class()], False
        if ch == "\\":
            return self.escape()
        if ch in "^$":
            self.sound = self.sound and ch == "^"
            self.i += 1
            return [], True
        if ch == ".":
            self.i += 1
            return [_ANY], False
        if ch in "*+?{":
            raise _Unknown
        self.i += 1
        return [regex.escape(ch)], False

    def char_class(self) -> str:
        p, start = self.p, self.i
        j = start + 1
        if j < len(p) and p[j] == "^":
            j += 1
        if j < len(p) and p[j] == "]":
            j += 1
        while j < len(p) and p[j] != "]":
            if p[j] == "[":
                raise _Unknown  # nested sets and POSIX classes
            j += 2 if p[j] == "\\" else 1
        if j >= len(p):
            raise _Unknown
        self.i = j + 1
        return p[start : j + 1]

    def escape(self) -> tuple[list[str], bool]:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise _Unknown
        ch = p[i + 1]
        end = i + 2
        if ch in _ZERO_WIDTH:
            self.sound = self.sound and ch == "A"
            self.i = end
            return [], True
        if ch in "pPN" or (ch in _HEX and p.startswith("{", end)):
            if ch in "pP" and not p.startswith("{", end):
                end += 1  # \pL
            else:
                close = p.find("}", end)
                if not p.startswith("{", end) or close < 0:
                    raise _Unknown
                end = close + 1
        elif ch in _HEX:
            end += _HEX[ch]
        elif not (ch in _CLASS or ch in _CONTROL or not ch.isalnum()):
            raise _Unknown  # back-references, octal, \X, \L<list>, \K and the like
        if end > len(p):
            raise _Unknown
        self.i = end
        return [p[i:end]], False


def read_syntax(pattern: str) -> Syntax:
    """What ``pattern`` (compiled without inline flags beyond IGNORECASE) tells a stream."""
    parser = _Parser(pattern)
    try:
        atoms, empty = parser.alternation()
    except (_Unknown, IndexError):
        return Syntax(None, partial=False)
    if parser.i != len(pattern) or empty:  # a stray ")", or a pattern that can match the empty string
        return Syntax(None, partial=False)
    starts = None if _ANY in atoms else "|".join(dict.fromkeys(atoms))
    sound = parser.sound and parser.first_repeat > parser.last_lookbehind
    return Syntax(starts, partial=sound)


__all__ = ["Syntax", "read_syntax"]

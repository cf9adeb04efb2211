"""The normaliser: one per-character mapping applied identically to list words and to scanned text.

Every original character maps to one of:

- ``SEP``: a separator (whitespace, punctuation, symbols, controls). Dropped from the normalised
  text, but counted: a word may span at most ``max_separator_gap`` of them between two characters.
- ``SKIP``: an invisible character (format characters such as ZWSP/ZWJ/BOM/soft hyphen/bidi
  controls, combining marks, variation selectors). Dropped and not counted.
- one or more kept characters: NFKC (full-width, circled …), accents stripped, case folded,
  traditional → simplified (OpenCC ``t2s``, per character), Cyrillic/Greek look-alikes → Latin.

The mapping is per character, so offsets stay exact: each normalised character comes from exactly one
original character. `Normalized` maps normalised offsets back to original ones.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator

import opencc

SEP = "\x01"
SKIP = "\x02"
_SKIP_CATEGORIES = frozenset({"Cf", "Mn", "Me"})

# Look-alikes folded to Latin, after case folding (so lower-case forms only).
HOMOGLYPHS: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "з": "3", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "һ": "h",
    "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g", "ь": "b",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ζ": "z", "ω": "w",
    # Latin variants that NFKC keeps
    "ı": "i", "ɑ": "a", "ɩ": "i", "ʟ": "l", "ᴏ": "o", "ꞵ": "b",
}  # fmt: skip

_HAN_RANGES = ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0xF900, 0xFB00), (0x20000, 0x2FA20), (0x30000, 0x323B0))


def is_word_char(ch: str) -> bool:
    """A letter or digit of an alphabetic script: Latin-script words need a boundary next to these.

    CJK, kana and hangul are excluded (code points from U+2E80 up): those words match anywhere.
    """
    return ch < "\u2e80" and ch.isalnum()


def _assigned_code_points() -> Iterator[int]:
    """Planes 0-3 and the tags/variation selectors of plane 14; planes 4-13 are unassigned and
    planes 15-16 are private use, which maps to itself."""
    yield from range(0x323B0)
    yield from range(0xE0000, 0xE0200)


def _t2s_table() -> dict[str, str]:
    """Traditional → simplified for single Han characters, from one batched OpenCC call."""
    han = [chr(cp) for lo, hi in _HAN_RANGES for cp in range(lo, hi) if unicodedata.category(chr(cp)) != "Cn"]
    converted = opencc.OpenCC("t2s").convert("\n".join(han)).split("\n")
    if len(converted) != len(han):  # never seen; keep going without t2s rather than misalign
        return {}
    return {src: dst for src, dst in zip(han, converted, strict=True) if len(dst) == 1 and dst != src}


def _map_char(ch: str, t2s: dict[str, str]) -> str:
    cat = unicodedata.category(ch)
    if cat in _SKIP_CATEGORIES:
        return SKIP
    if cat == "Cc":
        return SEP
    # classify after NFKC: circled letters are symbols (So) whose compatibility form is a letter
    if not unicodedata.decomposition(ch) and ch.casefold() == ch:
        if ch not in t2s and ch not in HOMOGLYPHS:  # the common case, kept short: this runs 200k times
            return SEP if cat[0] in "PSZ" else ch
        text = ch
    else:
        stripped = "".join(
            c for c in unicodedata.normalize("NFKD", ch) if unicodedata.category(c) not in _SKIP_CATEGORIES
        )
        text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", stripped).casefold())
    kept: list[str] = []
    saw_sep = False
    for c in text:
        c = t2s.get(c, c)
        c = HOMOGLYPHS.get(c, c)
        k = unicodedata.category(c)
        if k in _SKIP_CATEGORIES:
            continue
        if k == "Cc" or k[0] in "PSZ":
            saw_sep = True
            continue
        kept.append(c)
    if kept:
        return "".join(kept)
    return SEP if saw_sep else SKIP


def _char_class(code_points: list[int]) -> str:
    """A regex character class of ``code_points``, as ranges."""
    parts: list[str] = []
    it = iter(sorted(code_points))
    lo = hi = next(it)
    for cp in it:
        if cp == hi + 1:
            hi = cp
            continue
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
        lo = hi = cp
    parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "[" + "".join(parts) + "]"


class Normalized:
    """A normalised text with the map back to the original.

    ``text`` has separators and invisible characters removed. ``mapped`` is the original with only
    the changed characters mapped, one for one. The normalised text is built block by block
    (`BLOCK` characters), which also yields how many kept characters precede each block; a normalised
    offset is then found by walking a single block, and only when a match needs it.
    """

    __slots__ = ("_cum", "_mapped", "_removed", "_sep", "text")

    BLOCK = 1024

    def __init__(self, mapped: str, removed: re.Pattern[str], sep: re.Pattern[str]) -> None:
        self._mapped = mapped
        self._removed = removed
        self._sep = sep
        block = self.BLOCK
        parts = [removed.sub("", mapped[a : a + block]) for a in range(0, len(mapped), block)]
        cum = [0]
        for part in parts:
            cum.append(cum[-1] + len(part))
        self._cum = cum
        self.text = "".join(parts)

    def orig(self, n: int) -> int:
        """Original offset of normalised character ``n``."""
        cum = self._cum
        i = bisect_right(cum, n) - 1  # the last block starting at or before character n
        pos = i * self.BLOCK
        need = n - cum[i]
        for m in self._removed.finditer(self._mapped, pos):
            kept = m.start() - pos
            if need < kept:
                return pos + need
            need -= kept
            pos = m.end()
        return pos + need

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original span of normalised ``[start, end)`` (``end > start``)."""
        return self.orig(start), self.orig(end - 1) + 1

    def gap(self, n: int) -> int:
        """Separators between normalised characters ``n - 1`` and ``n`` (``n == len`` for the tail)."""
        lo = self.orig(n - 1) + 1 if n > 0 else 0
        hi = self.orig(n) if n < len(self.text) else len(self._mapped)
        return len(self._sep.findall(self._mapped, lo, hi))


def _may_hold_astral(text: str) -> bool:
    """False only when ``text`` certainly has no code point above U+FFFF, in O(1).

    CPython stores a string with 4 bytes per character only when it holds such a code point; 1 or 2 bytes
    per character plus the header stays below ``4 * len`` for any string longer than a few dozen characters.
    Short strings, and any other doubt, answer True and take the exact (regex) check.
    """
    return sys.getsizeof(text) >= 4 * len(text)


class Normalizer:
    """The per-character table. Building it takes a few hundred milliseconds: the app builds one and
    hands it to every policy compilation."""

    __slots__ = ("_astral", "_changed_run", "_removed_run", "_sep_one", "table")

    def __init__(self) -> None:
        t2s = _t2s_table()
        table: dict[int, str] = {}
        for cp in _assigned_code_points():
            ch = chr(cp)
            if unicodedata.category(ch) in ("Cn", "Co", "Cs"):
                continue
            mapped = _map_char(ch, t2s)
            if mapped != ch:
                table[cp] = mapped
        self.table = table
        # BMP-only classes compile to a bitmap in `re` (C speed); astral characters are mapped first
        sep = [cp for cp, m in table.items() if cp < 0x10000 and m == SEP] + [ord(SEP)]
        skip = [cp for cp, m in table.items() if cp < 0x10000 and m == SKIP] + [ord(SKIP)]
        changed = [cp for cp, m in table.items() if cp < 0x10000 and m not in (SEP, SKIP) and cp != ord(SKIP)]
        self._sep_one = re.compile(_char_class(sep))
        self._removed_run = re.compile(_char_class(sep + skip) + "+")
        self._changed_run = re.compile(_char_class(changed) + "+")
        self._astral = re.compile("[\U00010000-\U0010ffff]+")

    def char(self, ch: str) -> str:
        """The mapping of one character: ``SEP``, ``SKIP`` or the kept characters."""
        return self.table.get(ord(ch), ch)

    def word(self, word: str) -> str:
        """A list word as the matcher sees it: normalised, separators removed."""
        return self.normalize(word).text

    def _translate(self, m: re.Match[str]) -> str:
        return m.group().translate(self.table)

    def normalize(self, text: str) -> Normalized:
        # a SKIP sentinel in the input is a control character, i.e. a separator
        mapped = text.replace(SKIP, SEP) if SKIP in text else text
        if _may_hold_astral(mapped) and self._astral.search(mapped) is not None:
            mapped = self._astral.sub(self._translate, mapped)
        if self._changed_run.search(mapped) is not None:
            mapped = self._changed_run.sub(self._translate, mapped)
        if len(mapped) != len(text):
            return self._expanding(text)
        return Normalized(mapped, self._removed_run, self._sep_one)

    def _expanding(self, text: str) -> Normalized:
        """Texts where a character expands (``ﬁ`` → ``fi``): an explicit map, one entry per character."""
        out: list[str] = []
        origs: list[int] = []
        gaps: list[int] = []
        seps = 0
        table = self.table
        for i, ch in enumerate(text):
            mapped = table.get(ord(ch), ch)
            if mapped == SEP:
                seps += 1
            elif mapped != SKIP:
                for c in mapped:
                    out.append(c)
                    origs.append(i)
                    gaps.append(seps)
                    seps = 0
        gaps.append(seps)
        return _Explicit("".join(out), origs, gaps)


class _Explicit(Normalized):
    __slots__ = ("_gaps", "_origs")

    def __init__(self, text: str, origs: list[int], gaps: list[int]) -> None:
        self.text = text  # the base's block map is not built: this map is explicit
        self._origs = origs
        self._gaps = gaps

    def orig(self, n: int) -> int:
        return self._origs[n]

    def gap(self, n: int) -> int:
        return self._gaps[n]


__all__ = ["HOMOGLYPHS", "SEP", "SKIP", "Normalized", "Normalizer", "is_word_char"]

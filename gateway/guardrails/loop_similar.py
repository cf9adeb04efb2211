"""Paraphrased loops: units of text that recur *similar*, not equal (one detector per stream and field).

Qwen3 re-checks the same computation paragraph after paragraph with a few words and numbers
changed ("Wait, let me double-check…", "等等，让我再检查一下…"). Equality up to digits misses that.

The text is cut into *units*: lines, a long line also at a sentence end after ``_LONG_UNIT``
characters, and any text at ``similar_max_unit_chars``. Units of fewer than
``similar_min_unit_tokens`` tokens (list items, table rows, verses) are not compared. Tokens are
words (digits and punctuation dropped, case folded) and single CJK characters, so a unit's
shingles are word bigrams in English and character bigrams in Chinese. Each unit keeps a bottom-k sketch (the ``_SKETCH`` smallest shingle hashes); two units are copies
when the Jaccard similarity of their sketches reaches ``similar_threshold``.

A new unit joins the chain of its most similar recent unit: the chain counts copies and keeps its
weakest link. A chain is a loop at ``similar_min_repeats`` copies, or one copy earlier when every
link reaches ``similar_certain``, provided the text since the chain began is mostly repeated units
(a sentence that merely recurs in varied reasoning is no loop). Code fences and units made of
symbols (code, JSON, tables) are never compared.

Work happens once per unit, in C set operations over at most ``_SKETCH`` hashes against at most
``_MEMORY`` remembered units; per chunk only a concatenation and a regex search run.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from zlib import crc32

from gateway.policy.sections import LoopsSection

_SKETCH = 48  # shingle hashes kept per unit: exact for short units, a bottom-k sample for long ones
_MEMORY = 24  # recent units compared with a new one
_LONG_UNIT = 200  # a line this long is cut at its next sentence end
_MIN_REPEATED_SHARE = 0.6  # units since the chain began that must themselves repeat something
_MIN_LETTER_SHARE = 0.5  # letters among non-space characters: data and code are not prose
_MAX_CODE_SHARE = 0.04  # code punctuation among non-space characters

_CUT = re.compile(r"\n|[。！？!?；]|(?<=[.;:])[ \t]")
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\d_\u3400-\u9fff\uf900-\ufaff]+")
_CODE = re.compile(r"[(){}\[\]<>_;|\\#$@`\"=]")


@dataclass(slots=True, frozen=True)
class SimilarHit:
    """A chain of similar units that became a loop. Offsets count characters of the field's text."""

    period: int  # characters from the previous copy's start to this copy's start
    repeats: int  # copies in the chain
    start: int  # where the first copy starts
    offset: int  # end of the copy that made the loop certain
    similarity: float  # weakest link of the chain (Jaccard of the sketches)


@dataclass(slots=True, frozen=True)
class _Chain:
    """Copies of one unit up to a remembered unit, each similar to the one before."""

    copies: int
    weakest: float  # lowest similarity between consecutive copies, 1.0 for a first copy
    first: int  # start of the first copy
    second: int  # start of the second copy, -1 for a first copy
    period: int  # characters from the previous copy's start, 0 for a first copy

    def then(self, prev: int, start: int, sim: float) -> _Chain:
        second = self.second if self.second >= 0 else start
        return _Chain(self.copies + 1, min(self.weakest, sim), self.first, second, start - prev)

    def beats(self, other: _Chain) -> bool:
        return (self.copies, self.weakest) > (other.copies, other.weakest)


@dataclass(slots=True, frozen=True)
class _Unit:
    start: int
    tokens: int
    sketch: array[int]  # sorted; 4 bytes a hash keeps the remembered units small
    loose: _Chain  # longest chain of copies at least ``similar_threshold`` alike
    close: _Chain  # longest chain of copies at least ``similar_certain`` alike


class SimilarUnits:
    """Incremental paraphrased-loop detector; see the module docstring."""

    __slots__ = (
        "_certain",
        "_cur",
        "_fence",
        "_max_unit",
        "_min_tokens",
        "_repeats",
        "_start",
        "_threshold",
        "_units",
        "hit",
    )

    def __init__(self, cfg: LoopsSection) -> None:
        self._threshold = cfg.similar_threshold
        self._certain = cfg.similar_certain
        self._repeats = cfg.similar_min_repeats
        self._min_tokens = cfg.similar_min_unit_tokens
        self._max_unit = cfg.similar_max_unit_chars
        self._cur = ""  # the open unit's text
        self._start = 0  # its offset in the field's text
        self._fence = False  # inside a ``` code fence
        self._units: deque[_Unit] = deque(maxlen=_MEMORY)
        self.hit: SimilarHit | None = None

    def footprint(self) -> int:
        """Bytes held by the growing parts of the state: the open unit and the remembered sketches."""
        units = sum(sys.getsizeof(u) + sys.getsizeof(u.sketch) for u in self._units)
        return sys.getsizeof(self._cur) + sys.getsizeof(self._units) + units

    def feed(self, piece: str) -> SimilarHit | None:
        """See the next piece of the field; return a hit once, when a chain of copies is a loop."""
        if self.hit is not None or not piece:
            return None
        cur = self._cur
        pos = len(cur)
        cur += piece
        self._cur = cur
        m = _CUT.search(cur, pos)  # the lookbehind sees a "." that ended the last piece
        if m is None and len(cur) < self._max_unit:  # the common case: no break in a token
            return None
        max_unit = self._max_unit
        while True:
            if m is not None and m.end() <= max_unit:
                end = pos = m.end()
                if not self._cuts(cur, m.group(), end):
                    m = _CUT.search(cur, pos)
                    continue
            elif len(cur) >= max_unit:  # no break in a whole unit: cut at a fixed position
                end = max_unit
            else:
                return None
            hit = self._close(cur, end)
            if hit is not None:
                self.hit = hit
                return hit
            cur = self._cur
            m = _CUT.search(cur)

    def finish(self) -> SimilarHit | None:
        """The field is complete: its open unit ends here."""
        if self.hit is not None or not self._cur:
            return None
        self.hit = self._close(self._cur, len(self._cur))
        return self.hit

    # --- cutting ---------------------------------------------------------------------------------

    def _cuts(self, cur: str, mark: str, end: int) -> bool:
        """Whether the open unit ends at the break ``mark`` ending at ``cur[end]``: every line ends
        one (short lines are list items, rows, verses: never compared), a long line's sentence too."""
        if mark == "\n":
            if cur.lstrip().startswith("```"):
                self._fence = not self._fence
            return True
        return end >= _LONG_UNIT

    def _close(self, cur: str, end: int) -> SimilarHit | None:
        """End the open unit at ``cur[end]``; compare it with the recent units."""
        text = cur[:end]
        start = self._start
        self._cur = cur[end:]
        self._start = start + end
        if self._fence or len(text) < self._min_tokens:  # a token has at least one character
            return None
        tokens = _TOKEN.findall(text.casefold())
        if len(tokens) < self._min_tokens or not _is_prose(text, tokens):
            return None
        return self._remember(start, start + end, len(tokens), _sketch(tokens))

    # --- chains ----------------------------------------------------------------------------------

    def _remember(self, start: int, end: int, tokens: int, sketch: set[int]) -> SimilarHit | None:
        """Join the longest chains among the recent similar units; a long enough chain is a loop."""
        threshold, certain = self._threshold, self._certain
        loose = close = _Chain(1, 1.0, start, -1, 0)
        oldest = start - self._max_unit - self._max_unit // 4  # a copy of a long unit, a bit longer
        size = len(sketch)
        for unit in reversed(self._units):
            if unit.start < oldest:
                break
            small, large = (tokens, unit.tokens) if tokens < unit.tokens else (unit.tokens, tokens)
            if small < threshold * large:  # Jaccard is at most the size ratio
                continue
            inter = len(sketch.intersection(unit.sketch))
            sim = inter / (size + len(unit.sketch) - inter)
            if sim < threshold:
                continue
            chain = unit.loose.then(unit.start, start, sim)
            if chain.beats(loose):
                loose = chain
            if sim >= certain:
                chain = unit.close.then(unit.start, start, sim)
                if chain.beats(close):
                    close = chain
        self._units.append(_Unit(start, tokens, array("I", sorted(sketch)), loose, close))
        for chain, need in ((close, self._repeats - 1), (loose, self._repeats)):
            if chain.copies >= need and self._mostly_repeated(chain.second):
                return SimilarHit(chain.period, chain.copies, chain.first, end, round(chain.weakest, 3))
        return None

    def _mostly_repeated(self, since: int) -> bool:
        """Most units since the chain's second copy repeat an earlier unit: a loop, not a refrain."""
        total = repeated = 0
        for unit in reversed(self._units):
            if unit.start < since:
                break
            total += 1
            repeated += unit.loose.copies > 1
        return repeated >= _MIN_REPEATED_SHARE * total


def _is_prose(text: str, tokens: list[str]) -> bool:
    """Mostly letters and little code punctuation: JSON, CSV, tables and code are never compared."""
    nonspace = len(text) - sum(map(text.count, " \n\t"))
    letters = len("".join(tokens))
    return letters >= _MIN_LETTER_SHARE * nonspace and len(_CODE.findall(text)) <= _MAX_CODE_SHARE * nonspace


def _sketch(tokens: list[str]) -> set[int]:
    """The ``_SKETCH`` smallest CRC-32s of the token bigrams (stable across processes, unlike hash())."""
    shingles = set(map(crc32, map(str.encode, map(" ".join, pairwise(tokens)))))
    if len(shingles) > _SKETCH:
        shingles = set(sorted(shingles)[:_SKETCH])
    return shingles


__all__ = ["SimilarHit", "SimilarUnits"]

"""Repetition-loop detection on streamed text: one ``LoopDetector`` per stream and field.

Two detectors share one bounded tail of the text:

- *character level*: the tail is periodic with a unit of 1..``max_period_chars`` characters
  (哈哈哈, "the the the", a sentence repeated). A new piece either extends the current period (one
  slice comparison) or, when there is none, the last few characters are looked up in the tail (one
  ``rfind``) to find a candidate period, whose run is then measured backwards.
- *line level*: the text is cut into lines and sentences; each one holding letters becomes an
  element with two hashes, of its raw text and of its letters only (digits, punctuation and case
  removed). A periodic run of raw hashes is an exact block loop (a 92-line block repeated); a run of
  letter hashes that mostly matches one unit back is a near-duplicate loop (the same paragraph with
  counters). Elements live in small ``array`` buffers, so the state stays bounded.

A third detector, ``SimilarUnits`` (``loop_similar.py``), sees the same pieces and finds paraphrased
units (a few words changed as well as numbers). The earliest hit of the three wins.

The work per character is amortised constant and done by C string operations. Decisions depend on
positions in the text, not on chunk boundaries, so splitting the same text differently gives the
same verdict: the tail search runs at least every ``_PIECE`` characters.
"""

from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass
from typing import Literal

from gateway.guardrails.loop_similar import SimilarHit, SimilarUnits
from gateway.policy.sections import LoopsSection

LoopKind = Literal["exact", "near_dup", "similar"]

_PIECE = 64  # longest piece handled at once, so the tail search runs often enough
_MAX_SEGMENT = 512  # a segment without a break is cut at this length (a fixed position in the text)
_KEY = 8  # tail characters looked up to find a candidate period
_TRIES = 8  # earlier occurrences of the key tried per search
_SLACK = 32  # elements dropped at once from the front of the element arrays
_MIN_LETTERS = 3  # segments with fewer letters are skipped: separators, braces, list numbers

_BREAK = re.compile(r"[\n。！？!?；;.]")
_NON_LETTER = re.compile(r"[\W\d_]+")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(slots=True, frozen=True)
class LoopHit:
    """A loop that became certain. Offsets count characters of the field's text."""

    kind: LoopKind
    period: int  # characters in one repeated unit
    repeats: int  # copies of the unit when the loop became certain
    start: int  # where the repeated span starts
    offset: int  # where the loop became certain: text before it is kept, the rest is cut
    period_lines: int = 0  # lines or sentences in one unit; 0 for a character-level loop
    similarity: float = 1.0  # weakest similarity between copies; below 1 only for "similar" loops


def _back_run(buf: str, n: int, p: int) -> int:
    """Length of the longest suffix of ``buf[:n]`` equal to the text ``p`` characters before it."""
    limit = n - p
    lo, hi, step = 0, limit + 1, 16
    while lo < limit:  # gallop, then bisect: O(run) character comparisons in C
        size = min(lo + step, limit)
        if buf[n - size : n] == buf[n - size - p : n - p]:
            lo, step = size, step * 2
        else:
            hi = size
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if buf[n - mid : n] == buf[n - mid - p : n - p]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_prefix(a: str, b: str) -> int:
    i = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        i += 1
    return i


class LoopDetector:
    """Incremental loop detector for one field of one stream; see the module docstring."""

    __slots__ = (
        "_base",
        "_buf",
        "_en",
        "_fence",
        "_hn",
        "_hx",
        "_k",
        "_keep",
        "_last_en",
        "_letters",
        "_matched",
        "_matched_n",
        "_max_p",
        "_max_q",
        "_min_chars",
        "_min_symbol_chars",
        "_nd_k",
        "_nd_letters",
        "_nd_unit",
        "_need",
        "_nonspace",
        "_p",
        "_pend",
        "_q",
        "_qx",
        "_ratio",
        "_run",
        "_seen",
        "_seen_n",
        "_seg",
        "_similar",
        "_unit0",
        "_xchars",
        "_xrun",
        "hit",
    )

    def __init__(self, cfg: LoopsSection) -> None:
        self._k = cfg.min_repeats
        self._max_p = cfg.max_period_chars
        self._max_q = cfg.max_period_lines
        self._min_chars = cfg.min_loop_chars
        self._min_symbol_chars = cfg.min_symbol_loop_chars
        self._ratio = cfg.near_dup_ratio
        self._nd_k = cfg.near_dup_min_repeats
        self._nd_unit = cfg.near_dup_min_unit_chars
        self._nd_letters = cfg.near_dup_min_letter_share
        # The tail holds two units (to measure a period) and the current segment.
        self._keep = max(2 * self._max_p, _MAX_SEGMENT) + 2 * _PIECE
        self.hit: LoopHit | None = None
        self._similar = SimilarUnits(cfg) if cfg.similar_enabled else None
        # Character level.
        self._buf = ""
        self._base = 0  # offset of _buf[0] in the field's text
        self._p = 0  # current period, 0 when none
        self._run = 0  # trailing characters equal to those _p before them
        self._need = 0  # _run at which the loop is certain
        # Line level.
        self._seg = 0  # offset where the current segment starts
        self._fence = False  # inside a ``` code fence: no near-duplicate verdicts
        self._pend = 0  # hash of the skipped segments since the last element
        self._last_en = 0  # end offset of the last element
        self._hn = array("q")  # letters-only hash per element
        self._hx = array("q")  # raw hash per element
        self._en = array("q")  # end offset per element
        self._q = 0  # current near-duplicate period in elements, 0 when none
        self._seen = self._seen_n = 0  # chars and elements since _q began
        self._matched = self._matched_n = 0  # of those, matching the element _q back
        self._letters = self._nonspace = 0
        self._unit0 = 0  # chars of the copy before the one that started _q
        self._qx = 0  # current exact period in elements, 0 when none
        self._xrun = self._xchars = 0  # trailing elements (and their chars) equal to the one _qx back

    @property
    def consumed(self) -> int:
        """Characters of the field seen so far."""
        return self._base + len(self._buf)

    def footprint(self) -> int:
        """Bytes held by the growing parts of the state (tail text, element arrays, unit sketches)."""
        arrays = (self._hn, self._hx, self._en)
        similar = self._similar.footprint() if self._similar is not None else 0
        return sys.getsizeof(self._buf) + sum(sys.getsizeof(a) for a in arrays) + similar

    def feed(self, text: str) -> LoopHit | None:
        """See the next text of the field; return a hit once, when a loop becomes certain."""
        if self.hit is not None or not text:
            return None
        if len(text) <= _PIECE:
            return self._step(text)
        for i in range(0, len(text), _PIECE):
            hit = self._step(text[i : i + _PIECE])
            if hit is not None:
                return hit
        return None

    def finish(self) -> LoopHit | None:
        """The field is complete: its last segment ends here."""
        end = self.consumed
        if self.hit is not None:
            return None
        hit = self._segment(self._buf, end) if end > self._seg else None
        if self._similar is not None:
            hit = _earliest(hit, self._similar.finish())
        self.hit = hit
        return hit

    # --- one piece -------------------------------------------------------------------------------

    def _step(self, piece: str) -> LoopHit | None:
        buf = self._buf + piece
        n = len(buf)
        n0 = n - len(piece)
        hit = self._chars(buf, n0, n)
        if _BREAK.search(piece) is not None or self._base + n - self._seg > _MAX_SEGMENT:
            line_hit = self._lines(buf, n0)
            hit = _earliest(hit, line_hit)
        if self._similar is not None:
            hit = _earliest(hit, self._similar.feed(piece))
        if n > self._keep + 4 * _PIECE:
            cut = n - self._keep
            buf = buf[cut:]
            self._base += cut
        self._buf = buf
        self.hit = hit
        return hit

    # --- character level -------------------------------------------------------------------------

    def _chars(self, buf: str, n0: int, n: int) -> LoopHit | None:
        p = self._p
        if p:
            if buf[n0 - p : n - p] == buf[n0:n]:
                self._run += n - n0
                return self._char_hit(n) if self._run >= self._need else None
            m = _common_prefix(buf[n0 - p : n - p], buf[n0:n])
            self._run += m
            if self._run >= self._need:  # certain before the mismatch
                return self._char_hit(n0 + m)
            self._p = 0
        return self._search(buf, n)

    def _search(self, buf: str, n: int) -> LoopHit | None:
        """Find the shortest period with two whole copies at the tail, from the last _KEY chars."""
        if n <= _KEY:
            return None
        lo = n - _KEY - self._max_p
        if lo < 0:
            lo = 0
        pos = buf.rfind(buf[n - _KEY :], lo, n - 1)
        if pos < 0:  # the common case in prose: no earlier occurrence
            return None
        key = buf[n - _KEY :]
        tries = _TRIES
        while pos >= 0 and tries:
            p = n - _KEY - pos
            run = _back_run(buf, n, p)
            if run >= p:
                floor = self._min_chars if _LETTER.search(buf, n - p, n) else self._min_symbol_chars
                self._p, self._run = p, run
                self._need = max((self._k - 1) * p, floor - p)
                return self._char_hit(n) if run >= self._need else None
            tries -= 1
            pos = buf.rfind(key, lo, pos + _KEY - 1)
        return None

    def _char_hit(self, end: int) -> LoopHit:
        """The run of period _p ending at buf index ``end`` is long enough."""
        p, run = self._p, self._run
        end += self._base
        start = end - run - p
        certain = end - run + self._need
        return LoopHit("exact", p, (certain - start) // p, start, certain)

    # --- line level ------------------------------------------------------------------------------

    def _lines(self, buf: str, n0: int) -> LoopHit | None:
        base = self._base
        for m in _BREAK.finditer(buf, n0):
            end = base + m.end()
            hit = self._cut_long(buf, end) or self._segment(buf, end)
            if hit is not None:
                return hit
        return self._cut_long(buf, base + len(buf))

    def _cut_long(self, buf: str, end: int) -> LoopHit | None:
        while end - self._seg > _MAX_SEGMENT:
            hit = self._segment(buf, self._seg + _MAX_SEGMENT)
            if hit is not None:
                return hit
        return None

    def _segment(self, buf: str, end: int) -> LoopHit | None:
        text = buf[self._seg - self._base : end - self._base]
        self._seg = end
        stripped = text.strip()
        if not stripped:  # blank lines still count for exactness: a refrain after a blank line differs
            self._pend = hash((self._pend, ""))
            return None
        if stripped.startswith("```"):
            self._fence = not self._fence
        letters = _NON_LETTER.sub("", stripped)
        if len(letters) < _MIN_LETTERS:
            self._pend = hash((self._pend, stripped))
            return None
        raw = hash((self._pend, stripped))
        self._pend = 0
        nonspace = len(stripped) - stripped.count(" ")
        return self._element(hash(letters.casefold()), raw, end, len(letters), nonspace)

    def _element(self, hn: int, hx: int, end: int, letters: int, nonspace: int) -> LoopHit | None:
        hns, hxs, ens = self._hn, self._hx, self._en
        size = len(hns)
        chars = end - self._last_en
        self._last_en = end
        # Exact: consecutive elements equal to the one qx back.
        qx = self._qx
        if qx and hxs[size - qx] == hx:
            self._xrun += 1
            self._xchars += chars
        else:
            qx = self._qx = _latest(hxs, hx, size, self._max_q)
            self._xrun, self._xchars = (1, chars) if qx else (0, 0)
        # Near-duplicate: elements whose letters match the one q back, most of them.
        q = self._q
        if q:
            self._seen += chars
            self._seen_n += 1
            self._letters += letters
            self._nonspace += nonspace
            if hns[size - q] == hn:
                self._matched += chars
                self._matched_n += 1
            elif self._matched < self._ratio * self._seen:
                q = self._q = 0
        if not q:
            q = self._q = _latest(hns, hn, size, self._max_q)
            if q:
                self._seen = self._matched = chars
                self._seen_n = self._matched_n = 1
                self._letters, self._nonspace = letters, nonspace
                self._unit0 = ens[size - 1] - (ens[size - 1 - q] if size > q else 0)
        hns.append(hn)
        hxs.append(hx)
        ens.append(end)
        if size + 1 >= self._max_q + 2 + _SLACK:  # keep the last max_q + 2 elements, amortised
            drop = size + 1 - (self._max_q + 2)
            del hns[:drop], hxs[:drop], ens[:drop]
        if qx or q:
            return self._line_hit(end)
        return None

    def _line_hit(self, end: int) -> LoopHit | None:
        qx, xrun = self._qx, self._xrun
        if qx and xrun >= (self._k - 1) * qx:
            unit = self._xchars * qx // xrun
            if self._xchars + unit >= self._min_chars:
                return LoopHit("exact", unit, xrun // qx + 1, end - self._xchars - unit, end, qx)
        q, matched_n = self._q, self._matched_n
        if (
            q
            and not self._fence
            and matched_n >= (self._nd_k - 1) * q
            and self._matched >= self._ratio * self._seen
            and self._letters >= self._nd_letters * self._nonspace
        ):
            ens = self._en  # the latest copy must be long: short rows and list items are never loops
            unit = end - ens[-1 - q] if len(ens) > q else self._seen * q // self._seen_n
            if unit >= self._nd_unit:
                return LoopHit("near_dup", unit, matched_n // q + 1, end - self._seen - self._unit0, end, q)
        return None


def _earliest(hit: LoopHit | None, other: LoopHit | SimilarHit | None) -> LoopHit | None:
    """The hit that became certain first (the existing one on a tie)."""
    if other is None or (hit is not None and hit.offset <= other.offset):
        return hit
    if isinstance(other, LoopHit):
        return other
    return LoopHit("similar", other.period, other.repeats, other.start, other.offset, 0, other.similarity)


def _latest(values: array[int], value: int, size: int, max_back: int) -> int:
    """Distance back to the latest of ``values[:size]`` equal to ``value``, within ``max_back``; else 0."""
    lo = max(0, size - max_back)
    last = -1
    while True:
        try:
            last = values.index(value, lo, size)
        except ValueError:
            break
        lo = last + 1
    return size - last if last >= 0 else 0


def find_loop(text: str, cfg: LoopsSection) -> LoopHit | None:
    """Check a whole (non-streamed) text the way a stream is checked; cut it at ``hit.offset``."""
    if not cfg.enabled:
        return None
    detector = LoopDetector(cfg)
    return detector.feed(text) or detector.finish()


__all__ = ["LoopDetector", "LoopHit", "LoopKind", "find_loop"]

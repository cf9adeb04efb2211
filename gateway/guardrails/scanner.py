"""The incremental stream scanner: one per stream and field, split-invariant by construction.

Invariant: every hit that starts before the release point ``r`` is known. Text before ``r`` is final
(masks applied) and is released at once; only the tail from ``r`` is held back.

- Words: ``r`` is the start of the longest normalised tail that is still a prefix of some word (the
  automaton's depth), so at most ``longest word - 1`` normalised characters plus the separators
  between them are held. A complete Latin-script word at the tail is held until the next character
  shows whether a word boundary follows.
- Patterns: ``r`` is the start of the earliest match that more text could still make, lengthen or
  undo: a position from which some path of the pattern reads up to the end of the text, found with
  the `regex` module's partial matching (`patterns.advance`). Text that cannot be part of a match is
  released at once (Chinese prose under the default rules; an English word once the space after it
  shows it is no e-mail address); a phone number is held from its first digit until the text after
  it settles it. Each pattern resumes from its own open point, and a chunk none of whose characters can
  start a match costs a few dictionary look-ups (`CompiledGuardrails.start_mask`). A pattern that
  partial matching cannot judge (see `syntax`) is held from its first possible start character.
  Either way a match starting ``max_pattern_chars`` or more before the end counts as final (patterns
  must fit in it), which bounds the hold-back.

A block stops at the leftmost enforced block hit once every hit starting before it is known, so the
released text, the masks and the decisions are the same however the text was split.

JSON output (tool-call arguments, a ``response_format`` answer) is never masked: a mask could land outside a
string value and break the JSON, so there a mask rule acts as a block (``as_block``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from gateway.guardrails.normalize import SEP, SKIP
from gateway.guardrails.patterns import advance, fold_width, scan_from
from gateway.guardrails.pipeline import FIELD_PLACE, CheckResult, Decision, DeltaField, Stop

if TYPE_CHECKING:
    from gateway.guardrails.compiled import CompiledGuardrails, RuleView

LOOKBEHIND_CHARS = 32  # context kept before a pattern scan position for look-behinds
_TRIM_SLACK = 512
MASK_BLOCKS = frozenset({"tool_arguments"})  # places whose text is JSON: a mask there acts as a block


def as_block(decision: Decision) -> Decision:
    """A mask hit on JSON text, turned into the block it acts as (``mask_as_block`` says why)."""
    return replace(decision, action="block", detail=(*decision.detail, ("mask_as_block", 1)))


def mask_spans(text: str, spans: list[tuple[int, int]], mask_char: str, offset: int = 0) -> str:
    """``text`` (starting at absolute ``offset``) with each span replaced by ``mask_char`` × its length."""
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    size = len(text)
    for start, end in sorted(spans):
        lo, hi = max(start - offset, pos), min(end - offset, size)
        if lo >= hi:
            continue
        out.append(text[pos:lo])
        out.append(mask_char * (hi - lo))
        pos = hi
    out.append(text[pos:])
    return "".join(out)


class FieldScanner:
    """Scanner state for one field of one stream. Offsets are absolute in the field's text."""

    __slots__ = (
        "_base",
        "_block",
        "_end",
        "_folded",
        "_g",
        "_gap",
        "_k",
        "_known",
        "_mask_blocks",
        "_masks",
        "_n",
        "_nbase",
        "_ngap",
        "_norig",
        "_pbits",
        "_pending",
        "_pmin",
        "_pnext",
        "_raw",
        "_released",
        "_seen",
        "_stopped",
        "_table",
        "_view",
        "_where",
    )  # fmt: skip

    def __init__(
        self, guardrails: CompiledGuardrails, view: RuleView, where: str, *, mask_blocks: bool = False
    ) -> None:
        self._g = guardrails
        self._view = view
        self._where = where
        self._mask_blocks = mask_blocks
        self._table = guardrails.normalizer.table
        self._raw = ""
        self._folded = ""
        self._base = 0
        self._end = 0
        self._released = 0
        self._stopped = False
        # words: normalised tail, its original offsets and separator gaps, automaton depth
        self._n = ""
        self._nbase = 0
        self._norig: list[int] = []
        self._ngap: list[int] = []
        self._gap = 0
        self._k = 0
        self._pending: list[tuple[int, int, int]] = []
        # patterns: where each pattern's scan resumes (its earliest open match), and the least of them
        self._pnext = [0] * len(view.patterns)
        self._pmin = 0
        self._pbits = sum(1 << i for i in view.patterns)
        # hits known but not yet released; enforced masks; leftmost enforced block (start, end, rule)
        self._known: list[Decision] = []
        self._seen: set[tuple[int, int, int]] = set()
        self._masks: list[tuple[int, int]] = []
        self._block: tuple[int, int, int, Decision] | None = None

    # --- feeding ---------------------------------------------------------------------------------

    def feed(self, text: str) -> CheckResult:
        if self._stopped or not text:
            return CheckResult("")
        start = self._end
        self._raw += text
        self._end += len(text)
        if self._view.words:
            self._feed_words(text, start)
        if self._view.patterns:
            folded = fold_width(text)
            self._folded += folded
            self._feed_patterns(folded, start)
        return self._release(self._release_point())

    def finish(self) -> CheckResult:
        if self._stopped:
            return CheckResult("")
        if self._view.words:
            self._resolve_pending(final=True)
        if self._view.patterns:
            self._finish_patterns()
        result = self._release(self._end)
        self._stopped = True
        return result

    def _feed_words(self, text: str, start: int) -> None:
        """Advance the word automaton over new text. The hot loop: state lives in locals."""
        table = self._table
        words = self._g.words
        prefixes = words.prefixes
        max_len = words.max_len
        max_gap = words.max_gap
        n = self._n
        norig = self._norig
        ngap = self._ngap
        k = self._k
        gap = self._gap
        for i, ch in enumerate(text):
            mapped = table.get(ord(ch))
            if mapped is None:
                mapped = ch
            elif mapped == SEP:
                gap += 1
                continue
            elif mapped == SKIP:
                continue
            for c in mapped:
                if gap > max_gap:
                    k = 0  # nothing before a long separator run can be part of a match
                n += c
                norig.append(start + i)
                ngap.append(gap)
                gap = 0
                j = k + 1 if k < max_len else max_len
                entry = None
                while j:
                    entry = prefixes.get(n[-j:])
                    if entry is not None:
                        break
                    j -= 1
                k = j
                if self._pending or (entry is not None and entry[0]):
                    self._n, self._k, self._gap = n, k, gap
                    self._matched(entry[0] if entry is not None else ())
                    n = self._n
                if len(n) > 4 * max_len + 8:
                    self._n = n
                    self._cut()
                    n = self._n
        self._n, self._k, self._gap = n, k, gap
        if self._pending and gap:
            self._resolve_pending(final=False)

    def _matched(self, outs: tuple[int, ...]) -> None:
        """A character was appended: settle pending boundaries, then record the words it completes."""
        if self._pending:  # the character after a complete Latin-script word decides its boundary
            self._resolve_pending(final=False)
        words = self._g.words
        nend = self._nbase + len(self._n)
        for w in outs:
            s = nend - len(words.words[w])
            if words.need_end[w]:
                self._pending.append((w, s, nend))
            else:
                self._decide(w, s, nend, at_end=True)

    def _cut(self) -> None:
        cut = len(self._n) - (self._g.words.max_len + 2)
        self._n = self._n[cut:]
        del self._norig[:cut], self._ngap[:cut]
        self._nbase += cut

    def _gap_at(self, rel: int) -> int:
        return self._ngap[rel] if rel < len(self._ngap) else self._gap

    def _resolve_pending(self, *, final: bool) -> None:
        nend = self._nbase + len(self._n)
        still: list[tuple[int, int, int]] = []
        for w, s, e in self._pending:
            if e < nend or self._gap or final:
                self._decide(w, s, e, at_end=final and e == nend)
            else:
                still.append((w, s, e))
        self._pending = still

    def _decide(self, w: int, s: int, e: int, *, at_end: bool) -> None:
        base = self._nbase
        if not self._g.words.valid(w, s - base, e - base, self._n, self._gap_at, at_end):
            return
        start, end = self._norig[s - base], self._norig[e - 1 - base] + 1
        for r in self._g.words.rules[w]:
            self._add(r, start, end, timed_out=False)

    def _feed_patterns(self, folded: str, start: int) -> None:
        """Advance each pattern over the new text ``folded`` (from ``start``) to its earliest open match."""
        g = self._g
        end = self._end
        pnext = self._pnext
        can_start = g.start_mask(folded)
        if self._pmin >= start and not can_start & self._pbits:
            self._pnext = [end] * len(pnext)  # nothing open, and nothing can start in this text
            self._pmin = end
            return
        settled = end - g.max_pattern_chars + 1
        for slot, index in enumerate(self._view.patterns):
            pos = pnext[slot]
            if pos >= start and not can_start >> index & 1:
                pnext[slot] = end
                continue
            pattern = g.patterns[index]
            found, pnext[slot] = advance(pattern, 0, self._folded, self._base, pos, settled, g.timeout)
            for m in found:
                self._add(pattern.rule, m.start, m.end, timed_out=m.timed_out)
        self._pmin = min(pnext)

    def _finish_patterns(self) -> None:
        g = self._g
        for slot, index in enumerate(self._view.patterns):
            pattern = g.patterns[index]
            found, _ = scan_from(pattern, 0, self._folded, self._base, self._pnext[slot], None, g.timeout)
            for m in found:
                self._add(pattern.rule, m.start, m.end, timed_out=m.timed_out)
        self._pnext = [self._end] * len(self._pnext)
        self._pmin = self._end

    def _add(self, rule: int, start: int, end: int, *, timed_out: bool) -> None:
        view = self._view
        if view.modes[rule] is None or (start, end, rule) in self._seen:
            return
        self._seen.add((start, end, rule))
        matched = "" if timed_out else self._raw[start - self._base : end - self._base]
        d = self._g.decision(rule, view, self._where, start, end, matched, timed_out=timed_out)
        if self._mask_blocks and d.action == "mask":
            d = as_block(d)
        self._known.append(d)
        if d.mode != "enforce":
            return
        if d.action == "mask":
            self._masks.append((start, end))
        elif d.action == "block":
            key = (start, end, rule, d)
            if self._block is None or key[:3] < self._block[:3]:
                self._block = key

    # --- releasing -------------------------------------------------------------------------------

    def _release_point(self) -> int:
        r = self._end
        if self._view.words and self._k and self._gap <= self._g.words.max_gap:
            hold = self._hold()
            if hold:
                r = self._norig[len(self._n) - hold]
        if self._pending:
            r = min(r, self._norig[self._pending[0][1] - self._nbase])
        if self._view.patterns:
            r = min(r, self._pmin)
        return max(r, self._released)

    def _hold(self) -> int:
        """Length of the longest normalised tail that more text could still turn into a match."""
        n = self._n
        prefixes = self._g.words.prefixes
        for j in range(self._k, 0, -1):
            entry = prefixes.get(n[-j:])
            if entry is not None and entry[1]:
                return j
        return 0

    def _release(self, r: int) -> CheckResult:
        block = self._block
        # strictly before r: a hit starting at r itself may not be known yet, and the leftmost block at b
        # must be chosen among all of them (r reaches the end at finish, so a block always stops)
        if block is not None and block[0] < r:
            b = block[0]
            text = self._masked(self._released, b)
            final = [d for d in self._known if d.start < b]
            final.append(block[3])
            final.sort(key=lambda d: (d.start, d.end, d.rule))
            self._stopped = True
            self._released = b
            stop = Stop("content_filter", {"stopped": "content_filter", "rule": block[3].rule})
            return CheckResult(text, stop, final)
        text = self._masked(self._released, r) if r > self._released else ""
        self._released = r
        decisions: list[Decision] | None = None
        if self._known:
            ready = [d for d in self._known if d.start < r]
            if ready:
                self._known = [d for d in self._known if d.start >= r]
                decisions = sorted(ready, key=lambda d: (d.start, d.end, d.rule))
        self._trim()
        return CheckResult(text, None, decisions)

    def _masked(self, a: int, b: int) -> str:
        segment = self._raw[a - self._base : b - self._base]
        if not self._masks:
            return segment
        spans = [(s, e) for s, e in self._masks if e > a and s < b]
        self._masks = [(s, e) for s, e in self._masks if e > b]
        return mask_spans(segment, spans, self._g.mask_char, a)

    def _trim(self) -> None:
        keep = self._released
        if self._view.patterns:
            keep = min(keep, self._pmin) - LOOKBEHIND_CHARS
        cut = keep - self._base
        if cut > _TRIM_SLACK:
            self._raw = self._raw[cut:]
            if self._view.patterns:
                self._folded = self._folded[cut:]
            self._base = keep


class GuardrailStream:
    """The guardrails `StreamCheck`: ``content`` is scanned as ``output``, ``reasoning`` and ``tool_arguments``
    as themselves. Each tool call's arguments get a scanner of their own: ``finish("tool_arguments")`` ends one
    call, so a word cannot straddle two calls and no call's text is held back into the next."""

    __slots__ = ("_client", "_fields", "_g", "_json_content")

    def __init__(
        self, guardrails: CompiledGuardrails, client_id: str | None, *, json_content: bool = False
    ) -> None:
        self._g = guardrails
        self._client = client_id
        self._json_content = json_content
        self._fields: dict[str, FieldScanner | None] = {}

    def _field(self, where: DeltaField) -> FieldScanner | None:
        try:
            return self._fields[where]
        except KeyError:
            place = FIELD_PLACE[where]
            view = self._g.view(self._client, place)
            json_text = self._json_content and where == "content"
            scanner = None if view.empty else FieldScanner(self._g, view, place, mask_blocks=json_text)
            self._fields[where] = scanner
            return scanner

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        scanner = self._field(where)
        return CheckResult(text) if scanner is None else scanner.feed(text)

    def finish(self, where: DeltaField) -> CheckResult:
        scanner = self._field(where)
        if where == "tool_arguments":
            del self._fields[where]  # the next call starts with a fresh scanner
        return CheckResult("") if scanner is None else scanner.finish()


__all__ = ["LOOKBEHIND_CHARS", "MASK_BLOCKS", "FieldScanner", "GuardrailStream", "as_block", "mask_spans"]

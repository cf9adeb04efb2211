"""Word lists: one Aho–Corasick automaton over the normalised words of every word rule.

Whole texts are scanned with ``ahocorasick_rs`` over UTF-8 bytes (several times faster than its
``str`` interface on Chinese; UTF-8 cannot match off a character boundary). Streams use the same
words as a dict of prefixes, which gives both the matches ending at each new character and the
hold-back: the longest tail that is still a prefix of some word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import ahocorasick_rs

from gateway.guardrails.normalize import Normalized, is_word_char

# gap(n): separators between normalised characters n - 1 and n
GapFn = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class WordMatch:
    """A valid occurrence of word ``word`` in normalised ``[start, end)``."""

    word: int
    start: int
    end: int


class WordMatcher:
    """All normalised words of a policy; ``rules[word]`` are the rule indexes that list the word."""

    __slots__ = ("_automaton", "max_gap", "max_len", "need_end", "need_start", "prefixes", "rules", "words")

    def __init__(self, entries: Iterable[tuple[str, int]], max_gap: int) -> None:
        index: dict[str, int] = {}
        rules: list[list[int]] = []
        for word, rule in entries:
            if not word:
                continue
            i = index.setdefault(word, len(index))
            if i == len(rules):
                rules.append([])
            if rule not in rules[i]:
                rules[i].append(rule)
        self.words: tuple[str, ...] = tuple(index)
        self.rules: tuple[tuple[int, ...], ...] = tuple(tuple(r) for r in rules)
        # Latin-script ends need a word boundary there; CJK ends match anywhere
        self.need_start = tuple(is_word_char(w[0]) for w in self.words)
        self.need_end = tuple(is_word_char(w[-1]) for w in self.words)
        self.max_len = max((len(w) for w in self.words), default=0)
        self.max_gap = max_gap
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick(
                [w.encode() for w in self.words], implementation=ahocorasick_rs.Implementation.ContiguousNFA
            )
            if self.words
            else None
        )
        self.prefixes = self._prefix_outputs(index)

    def _prefix_outputs(self, index: dict[str, int]) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every prefix of every word → (the words that end it, whether it is still open).

        The words ending a prefix are the automaton's output function. A prefix is open when more text
        can still change what it means: it is a proper prefix of a word, or a whole word that waits for
        the character after it to know whether a word boundary follows.
        """
        prefixes: dict[str, tuple[tuple[int, ...], bool]] = {}
        for word in index:
            for j in range(1, len(word) + 1):
                prefix = word[:j]
                outs = prefixes[prefix][0] if prefix in prefixes else None
                if outs is None:
                    outs = tuple(index[prefix[k:]] for k in range(len(prefix)) if prefix[k:] in index)
                is_open = j < len(word) or self.need_end[index[word]]
                prefixes[prefix] = (outs, is_open or (prefix in prefixes and prefixes[prefix][1]))
        return prefixes

    def __bool__(self) -> bool:
        return bool(self.words)

    def find(self, norm: Normalized) -> list[WordMatch]:
        """Valid matches in a whole normalised text, in order of end."""
        if self._automaton is None:
            return []
        text = norm.text
        data = text.encode()
        raw = self._automaton.find_matches_as_indexes(data, overlapping=True)
        if not raw:
            return []
        # byte offsets → character offsets, decoding only the stretches between matches
        offsets = sorted({b for _, s, e in raw for b in (s, e)})
        chars: dict[int, int] = {}
        pos = 0
        count = 0
        for b in offsets:
            count += len(data[pos:b].decode())
            chars[b] = count
            pos = b
        found: list[WordMatch] = []
        size = len(text)
        for word, s, e in raw:
            start, end = chars[s], chars[e]
            if self.valid(word, start, end, text, norm.gap, end == size):
                found.append(WordMatch(word, start, end))
        return found

    def valid(self, word: int, start: int, end: int, text: str, gap: GapFn, at_end: bool) -> bool:
        """Separator gaps inside the match within bounds; boundaries at Latin-script ends.

        ``at_end``: nothing follows ``end`` (end of text), which is a boundary.
        """
        max_gap = self.max_gap
        for k in range(start + 1, end):
            if gap(k) > max_gap:
                return False
        if self.need_start[word] and start > 0 and not gap(start) and is_word_char(text[start - 1]):
            return False
        return not (self.need_end[word] and not at_end and not gap(end) and is_word_char(text[end]))


def words_of(
    lists: Sequence[str], inline: Sequence[str], word_lists: dict[str, tuple[str, ...]]
) -> list[str]:
    """The raw words of a rule: its lists' entries, then its inline words."""
    out: list[str] = []
    for name in lists:
        out.extend(word_lists.get(name, ()))
    out.extend(inline)
    return out


__all__ = ["WordMatch", "WordMatcher", "words_of"]

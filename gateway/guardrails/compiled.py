"""A policy's guardrails compiled once per load: whole-text scans and per-stream checks.

`compile_guardrails` builds the word automaton, the patterns and a rule view for every
(client, where) pair up front, so nothing per request is done per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.guardrails.normalize import Normalizer
from gateway.guardrails.patterns import CompiledPattern, compile_pattern, scan_text
from gateway.guardrails.pipeline import Decision
from gateway.guardrails.scanner import MASK_BLOCKS, GuardrailStream, as_block, mask_spans
from gateway.guardrails.verdict import Verdict, strongest
from gateway.guardrails.words import WordMatcher, words_of
from gateway.policy.sections import ALL_WHERE, PatternRule, PolicyBundle, Where, WordRule

_START_MEMO = 8192  # distinct characters remembered by `start_mask` (Chinese text uses a few thousand)


class GuardrailsCompileError(ValueError):
    """The guardrails section cannot be compiled; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    category: str
    action: str
    mode: str
    where: frozenset[str]


@dataclass(frozen=True, slots=True)
class RuleView:
    """The rules in force for one client at one place: ``modes[i]`` is None when rule i is off."""

    modes: tuple[str | None, ...]
    words: bool
    patterns: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return not self.words and not self.patterns


class CompiledGuardrails:
    """Scans whole texts (`scan`) and builds stream checks (`stream_check`) for one policy snapshot."""

    def __init__(
        self,
        rules: tuple[RuleInfo, ...],
        words: WordMatcher,
        patterns: tuple[CompiledPattern, ...],
        views: dict[tuple[str | None, str], RuleView],
        *,
        normalizer: Normalizer,
        mask_char: str,
        max_gap: int,
        timeout: float,
        max_pattern_chars: int,
    ) -> None:
        self.rules = rules
        self.words = words
        self.patterns = patterns
        self.normalizer = normalizer
        self.mask_char = mask_char
        self.max_gap = max_gap
        self.timeout = timeout
        self.max_pattern_chars = max_pattern_chars
        self._views = views
        self._start_bits: dict[str, int] = {}  # a memo: character -> patterns it can start (see start_mask)

    def start_mask(self, folded: str) -> int:
        """Bit ``i`` set when a character of ``folded`` can start a match of pattern ``i``."""
        memo = self._start_bits
        mask = 0
        for ch in folded:
            bits = memo.get(ch)
            if bits is None:
                if len(memo) >= _START_MEMO:
                    memo.clear()
                bits = sum(
                    1 << i for i, p in enumerate(self.patterns) if p.starts is None or p.starts.match(ch)
                )
                memo[ch] = bits
            mask |= bits
        return mask

    def view(self, client_id: str | None, where: str) -> RuleView:
        return self._views.get((client_id, where)) or self._views[(None, where)]

    def hits(self, text: str, where: Where, client_id: str | None = None) -> list[Decision]:
        """Every hit in a whole text as decisions (offsets into ``text``), sorted by position."""
        view = self.view(client_id, where)
        found: dict[tuple[int, int, int], Decision] = {}
        if view.words:
            norm = self.normalizer.normalize(text)
            for match in self.words.find(norm):
                start, end = norm.span(match.start, match.end)
                for r in self.words.rules[match.word]:
                    if view.modes[r] is not None:
                        found.setdefault(
                            (start, end, r), self.decision(r, view, where, start, end, text[start:end])
                        )
        if view.patterns:
            active = tuple(self.patterns[i] for i in view.patterns)
            for pm in scan_text(active, text, self.timeout):
                r = active[pm.pattern].rule
                matched = "" if pm.timed_out else text[pm.start : pm.end]
                d = self.decision(r, view, where, pm.start, pm.end, matched, timed_out=pm.timed_out)
                found.setdefault((pm.start, pm.end, r), d)
        return [found[k] for k in sorted(found)]

    def scan(self, text: str, where: Where, client_id: str | None = None) -> Verdict:
        """The verdict on a whole text; ``text`` of the verdict has enforced masks applied."""
        hits = tuple(self.hits(text, where, client_id))
        spans = [(d.start, d.end) for d in hits if d.mode == "enforce" and d.action == "mask"]
        return Verdict(strongest(hits), hits, mask_spans(text, spans, self.mask_char))

    def decision(
        self,
        rule: int,
        view: RuleView,
        where: str,
        start: int,
        end: int,
        matched: str,
        *,
        timed_out: bool = False,
    ) -> Decision:
        """A hit of rule index ``rule`` as a decision; ``matched`` feeds only the audit HMAC."""
        info = self.rules[rule]
        mode = view.modes[rule] or info.mode
        if timed_out:
            # fail closed: a pattern that cannot finish in time blocks, it never lets text through unchecked
            return Decision(info.id, info.category, "block", mode, where, start, end, "", (("timeout", 1),))
        if info.action == "mask" and where in MASK_BLOCKS:
            return as_block(Decision(info.id, info.category, "mask", mode, where, start, end, matched))
        return Decision(info.id, info.category, info.action, mode, where, start, end, matched)

    def stream_check(self, client_id: str | None = None, *, json_content: bool = False) -> GuardrailStream:
        """A `StreamCheck` for one stream: content, reasoning and each tool call's arguments scanned apart.
        ``json_content``: the answer is JSON (``response_format``), so a mask in content acts as a block."""
        return GuardrailStream(self, client_id, json_content=json_content)


def _views(
    rules: tuple[RuleInfo, ...], bundle: PolicyBundle, kinds: tuple[str, ...]
) -> dict[tuple[str | None, str], RuleView]:
    overrides: dict[str | None, tuple[frozenset[str], frozenset[str]]] = {None: (frozenset(), frozenset())}
    for client_id, policy in bundle.clients.clients.items():
        if policy.guardrails is not None:
            overrides[client_id] = (frozenset(policy.guardrails.disable), frozenset(policy.guardrails.shadow))
    views: dict[tuple[str | None, str], RuleView] = {}
    for client, (disable, shadow) in overrides.items():
        for where in ALL_WHERE:
            modes = tuple(
                None
                if where not in rule.where or rule.id in disable
                else ("shadow" if rule.id in shadow else rule.mode)
                for rule in rules
            )
            word_on = any(m is not None and kinds[i] == "words" for i, m in enumerate(modes))
            views[(client, where)] = RuleView(modes, word_on, ())
    return views


def compile_guardrails(bundle: PolicyBundle, normalizer: Normalizer | None = None) -> CompiledGuardrails:
    """Compile the bundle's guardrails section; raises `GuardrailsCompileError` listing every problem.

    Pass the process's ``normalizer`` to skip building its table again (the app does, on every reload).
    """
    section = bundle.guardrails
    norm = normalizer or Normalizer()
    problems: list[str] = []
    infos: list[RuleInfo] = []
    kinds: list[str] = []
    entries: list[tuple[str, int]] = []
    patterns: list[CompiledPattern] = []
    # guard rules (classifier, webhook) run apart, in `gateway.guardrails.guards`
    text_rules = [r for r in section.rules if isinstance(r, WordRule | PatternRule)]
    for index, rule in enumerate(text_rules):
        infos.append(RuleInfo(rule.id, rule.category, rule.action, rule.mode, frozenset(rule.where)))
        kinds.append(rule.kind)
        if isinstance(rule, WordRule):
            missing = [name for name in rule.lists if name not in bundle.word_lists]
            if missing:
                problems.append(f"rule {rule.id!r}: missing word lists {missing}")
            entries.extend((norm.word(w), index) for w in words_of(rule.lists, rule.words, bundle.word_lists))
        elif isinstance(rule, PatternRule):
            try:
                patterns.append(
                    compile_pattern(
                        index, rule.pattern, rule.ignore_case, rule.validator, section.max_pattern_chars
                    )
                )
            except Exception as exc:  # noqa: BLE001 - regex raises several error types; all are reported
                problems.append(f"rule {rule.id!r}: pattern does not compile: {exc}")
    if problems:
        raise GuardrailsCompileError(problems)
    rules = tuple(infos)
    views = _views(rules, bundle, tuple(kinds))
    for key, view in views.items():
        active = tuple(i for i, p in enumerate(patterns) if view.modes[p.rule] is not None)
        views[key] = RuleView(view.modes, view.words, active)
    return CompiledGuardrails(
        rules,
        WordMatcher(entries, section.max_separator_gap),
        tuple(patterns),
        views,
        normalizer=norm,
        mask_char=section.mask_char,
        max_gap=section.max_separator_gap,
        timeout=section.pattern_timeout_ms / 1000.0,
        max_pattern_chars=section.max_pattern_chars,
    )


__all__ = ["CompiledGuardrails", "GuardrailsCompileError", "RuleInfo", "RuleView", "compile_guardrails"]

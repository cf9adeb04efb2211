"""Checks across fields and sections that the pydantic model cannot express on its own.

Each check runs only when the sections it reads validated, so one broken file does not bury the
report under follow-on errors. Every problem points at the line of the value it is about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import limits

from gateway.policy.patterns import pattern_problem
from gateway.policy.problems import PolicyError
from gateway.policy.sections import PatternRule, PolicyBundle, TierLimits, WordRule
from gateway.policy.words import word_problem
from gateway.policy.yamlsource import LineIndex, Loc


@dataclass(frozen=True, slots=True)
class Located:
    """Where a section came from: its file (relative) and the line index of its YAML."""

    file: str
    index: LineIndex

    def error(self, loc: Loc, message: str) -> PolicyError:
        return PolicyError(self.file, self.index.line_of(loc), message)


def cross_check(
    bundle: PolicyBundle, sources: Mapping[str, Located], valid: frozenset[str]
) -> list[PolicyError]:
    """All semantic problems of the sections named in ``valid`` (those that passed the schema)."""
    errors: list[PolicyError] = []
    if "guardrails" in valid:
        errors += _guardrail_rules(bundle, sources["guardrails"])
        if "loops" in valid:
            errors += _loop_rule_id(bundle, sources["loops"])
    if "limits" in valid:
        for name, tier in bundle.limits.tiers.items():
            errors += _rates(tier, sources["limits"], ("tiers", name))
    if "clients" in valid:
        errors += _clients(bundle, sources["clients"], valid)
    if "generation" in valid:
        errors += _generation(bundle, sources["generation"])
    return errors


def _guardrail_rules(bundle: PolicyBundle, src: Located) -> list[PolicyError]:
    errors: list[PolicyError] = []
    section = bundle.guardrails
    first_seen: dict[str, int] = {}
    for i, rule in enumerate(section.rules):
        at: Loc = ("rules", i)
        line = src.index.line_of((*at, "id"))
        if rule.id in first_seen:
            errors.append(
                PolicyError(
                    src.file, line, f"duplicate rule id {rule.id!r} (first at line {first_seen[rule.id]})"
                )
            )
        else:
            first_seen[rule.id] = line
        if not rule.where:
            errors.append(
                src.error((*at, "where"), f"rule {rule.id!r}: 'where' is empty, the rule never applies")
            )
        if isinstance(rule, WordRule):
            errors += _word_rule(rule, bundle.word_lists, src, at)
        elif isinstance(rule, PatternRule):
            problem = pattern_problem(rule.pattern, rule.ignore_case, section.pattern_timeout_ms)
            if problem is not None:
                errors.append(src.error((*at, "pattern"), f"rule {rule.id!r}: {problem}"))
    return errors


def _word_rule(
    rule: WordRule, lists: Mapping[str, Sequence[str]], src: Located, at: Loc
) -> list[PolicyError]:
    errors: list[PolicyError] = []
    if not rule.lists and not rule.words:
        errors.append(src.error(at, f"rule {rule.id!r}: a word rule needs 'lists' or 'words'"))
    for j, name in enumerate(rule.lists):
        if name not in lists:
            errors.append(
                src.error(
                    (*at, "lists", j),
                    f"rule {rule.id!r}: list {name!r} not found (expected lists/{name}.txt)",
                )
            )
    for j, word in enumerate(rule.words):
        problem = word_problem(word)
        if problem is not None:
            errors.append(src.error((*at, "words", j), f"rule {rule.id!r}: {problem}"))
    return errors


def _loop_rule_id(bundle: PolicyBundle, src: Located) -> list[PolicyError]:
    ids = {rule.id for rule in bundle.guardrails.rules}
    if bundle.loops.rule_id in ids:
        return [src.error(("rule_id",), f"rule_id {bundle.loops.rule_id!r} is also a guardrail rule id")]
    return []


def _rates(tier: TierLimits, src: Located, at: Loc) -> list[PolicyError]:
    errors: list[PolicyError] = []
    for field in ("requests", "tokens"):
        value: str | None = getattr(tier, field)
        if value is None:
            continue
        try:
            parsed = limits.parse_many(value)
        except ValueError as exc:
            errors.append(src.error((*at, field), f"{field}: cannot parse rate {value!r}: {exc}"))
            continue
        if any(item.amount < 1 for item in parsed):
            errors.append(src.error((*at, field), f"{field}: a rate must allow at least 1 per window"))
    return errors


def _clients(bundle: PolicyBundle, src: Located, valid: frozenset[str]) -> list[PolicyError]:
    errors: list[PolicyError] = []
    section = bundle.clients
    check_tiers = "limits" in valid
    tiers = bundle.limits.tiers
    rule_ids = {rule.id for rule in bundle.guardrails.rules} if "guardrails" in valid else None

    def tier_ref(tier: str | None, loc: Loc, owner: str) -> None:
        if check_tiers and tier is not None and tier not in tiers:
            known = ", ".join(sorted(tiers)) or "none defined"
            errors.append(src.error(loc, f"{owner}: unknown tier {tier!r} (limits.yaml tiers: {known})"))

    for client_id, client in section.clients.items():
        at: Loc = ("clients", client_id)
        tier_ref(client.tier, (*at, "tier"), f"client {client_id!r}")
        if client.limits is not None:
            errors += _rates(client.limits, src, (*at, "limits"))
        if client.guardrails is not None and rule_ids is not None:
            for kind in ("disable", "shadow"):
                for j, rule_id in enumerate(getattr(client.guardrails, kind)):
                    if rule_id not in rule_ids:
                        errors.append(
                            src.error(
                                (*at, "guardrails", kind, j),
                                f"client {client_id!r}: {kind} names unknown guardrail rule {rule_id!r}",
                            )
                        )
    for scope, grant in section.scopes.items():
        tier_ref(grant.tier, ("scopes", scope, "tier"), f"scope {scope!r}")
    tier_ref(section.default_tier, ("default_tier",), "default_tier")
    return errors


def _generation(bundle: PolicyBundle, src: Located) -> list[PolicyError]:
    gen = bundle.generation
    errors: list[PolicyError] = []
    if gen.default_max_tokens > gen.max_tokens_cap:
        errors.append(src.error(("default_max_tokens",), "default_max_tokens is larger than max_tokens_cap"))
    if gen.max_tokens_cap > gen.context_cap:
        errors.append(src.error(("max_tokens_cap",), "max_tokens_cap is larger than context_cap"))
    return errors


__all__ = ["Located", "cross_check"]

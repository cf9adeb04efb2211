"""Golden cases: ``DIR/tests/*.yaml``, each a list of texts with the verdict the policy must give.

::

    - name: phone number is masked in output
      text: "call me at 13812345678"
      where: output            # input (default) | output | reasoning | tool_arguments
      client: demo-app         # optional: applies that client's overrides
      expect:
        action: mask           # allow | flag | mask | block
        rules: [pii.cn_mobile] # exactly the rule ids that hit, shadow hits included
        text: "call me at ***********"   # optional: the text after masking
      guards:                  # optional: mocked verdicts of guard rules (classifier, webhook) by rule id;
        guard.qwen: {action: block, category: Violent}   # a guard rule not mocked allows
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import Field

from gateway.policy.problems import PolicyError
from gateway.policy.sections import ClassifierRule, PolicyBundle, Strict, WebhookRule, Where
from gateway.policy.store import GuardrailScanner
from gateway.policy.yamlsource import parse_yaml

TESTS_DIR = "tests"


class Expectation(Strict):
    action: Literal["allow", "flag", "mask", "block"]
    rules: list[str] = Field(default_factory=list, description="Rule ids that must hit, and no others.")
    text: str | None = Field(None, description="The text after masking, if given.")


class GuardMock(Strict):
    """A guard rule's answer in a golden case: no model or service is called by ``gateway policy test``."""

    action: Literal["allow", "flag", "block"]
    category: str = "mocked"


class GoldenCase(Strict):
    name: str = Field(min_length=1)
    text: str
    where: Where = "input"
    client: str | None = None
    guards: dict[str, GuardMock] = Field(
        default_factory=dict, description="Mocked guard verdicts by rule id."
    )
    expect: Expectation


_CASES = pydantic.TypeAdapter(list[GoldenCase])


@dataclass(frozen=True, slots=True)
class LocatedCase:
    file: str
    line: int
    case: GoldenCase


@dataclass(frozen=True, slots=True)
class CaseFailure:
    case: LocatedCase
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.case.file}:{self.case.line}: {self.case.case.name!r}: " + "; ".join(self.problems)


def load_cases(root: Path) -> tuple[list[LocatedCase], list[PolicyError]]:
    """Every case under ``root/tests``, and the problems of files that do not parse or validate."""
    cases: list[LocatedCase] = []
    errors: list[PolicyError] = []
    folder = root / TESTS_DIR
    if not folder.is_dir():
        return cases, errors
    for path in sorted(folder.glob("*.yaml")):
        if path.name.startswith("."):
            continue
        rel = f"{TESTS_DIR}/{path.name}"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(rel, 1, f"cannot read file: {exc}"))
            continue
        parsed = parse_yaml(text, rel)
        if isinstance(parsed, list):
            errors += parsed
            continue
        try:
            items = _CASES.validate_python([] if parsed.data is None else parsed.data)
        except pydantic.ValidationError as exc:
            for item in exc.errors(include_url=False, include_input=False):
                where = ".".join(str(p) for p in item["loc"])
                errors.append(PolicyError(rel, parsed.index.line_of(item["loc"]), f"{where}: {item['msg']}"))
            continue
        cases += [LocatedCase(rel, parsed.index.line_of((i,)), case) for i, case in enumerate(items)]
    return cases, errors


_STRENGTH = {"allow": 0, "flag": 1, "mask": 2, "block": 3}


def guard_hits(bundle: PolicyBundle, spec: GoldenCase) -> tuple[list[str], list[str]]:
    """The mocked guard rules that hit (rule ids) and the actions they enforce, for this case's client."""
    override = bundle.clients.clients.get(spec.client or "")
    disable = set(override.guardrails.disable) if override and override.guardrails else set()
    shadow = set(override.guardrails.shadow) if override and override.guardrails else set()
    rules: list[str] = []
    actions: list[str] = []
    for rule in bundle.guardrails.rules:
        mock = spec.guards.get(rule.id)
        if not isinstance(rule, ClassifierRule | WebhookRule) or mock is None or mock.action == "allow":
            continue
        if spec.where in rule.where and rule.id not in disable:
            rules.append(rule.id)
            if rule.mode == "enforce" and rule.id not in shadow:
                actions.append(mock.action)
    return rules, actions


def run_case(
    scanner: GuardrailScanner,
    case: LocatedCase,
    known_clients: Sequence[str],
    bundle: PolicyBundle | None = None,
) -> CaseFailure | None:
    """``bundle``: the policy, for the guard rules a case mocks (without it, guard mocks are ignored)."""
    spec = case.case
    if spec.client is not None and spec.client not in known_clients:
        return CaseFailure(case, (f"unknown client {spec.client!r}",))
    verdict = scanner.scan(spec.text, spec.where, client_id=spec.client)
    guard_rules, guard_actions = guard_hits(bundle, spec) if bundle is not None else ([], [])
    action = max([verdict.action, *guard_actions], key=_STRENGTH.__getitem__)
    problems: list[str] = []
    if bundle is not None:
        ids = {r.id for r in bundle.guardrails.rules if isinstance(r, ClassifierRule | WebhookRule)}
        problems += [
            f"guards: {rule!r} is not a guard rule of the policy" for rule in sorted(set(spec.guards) - ids)
        ]
    if action != spec.expect.action:
        problems.append(f"expected action {spec.expect.action}, got {action}")
    got = sorted({hit.rule for hit in verdict.hits} | set(guard_rules))
    want = sorted(set(spec.expect.rules))
    if got != want:
        problems.append(f"expected rules {want}, got {got}")
    if spec.expect.text is not None and verdict.text != spec.expect.text:
        problems.append("masked text differs from expect.text")
    return CaseFailure(case, tuple(problems)) if problems else None


__all__ = [
    "CaseFailure",
    "Expectation",
    "GoldenCase",
    "GuardMock",
    "LocatedCase",
    "guard_hits",
    "load_cases",
    "run_case",
]

"""The default bundle's guardrail golden cases pass with the real matcher."""

from __future__ import annotations

from gateway.guardrails import CompiledGuardrails
from gateway.policy.golden import load_cases, run_case
from tests.support.guardrails import DEFAULT_BUNDLE


def test_default_guardrail_golden_cases(default_guardrails: CompiledGuardrails) -> None:
    cases, errors = load_cases(DEFAULT_BUNDLE)
    assert errors == []
    mine = [c for c in cases if c.file.endswith("guardrails.yaml")]
    assert len(mine) >= 10
    failures = [str(f) for c in mine if (f := run_case(default_guardrails, c, ["demo-app"])) is not None]
    assert failures == []

"""Shared test helpers (moved out of tests/unit/guardrails/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.guardrails import (
    CheckResult,
    CompiledGuardrails,
    Decision,
    GuardrailStream,
    compile_guardrails,
)
from gateway.policy.sections import GuardrailsSection, PolicyBundle
from tests.support.normalizer import shared_normalizer

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "policies" / "default"


Build = Callable[..., CompiledGuardrails]


def build_guardrails(
    rules: list[dict[str, Any]],
    lists: dict[str, tuple[str, ...]] | None = None,
    clients: dict[str, Any] | None = None,
    **section: Any,
) -> CompiledGuardrails:
    rules = [{"kind": "pattern" if "pattern" in r else "words", **r} for r in rules]
    data: dict[str, Any] = {
        "guardrails": GuardrailsSection.model_validate({"rules": rules, **section}),
        "word_lists": lists or {},
    }
    if clients is not None:
        data["clients"] = {"clients": clients}
    return compile_guardrails(PolicyBundle.model_validate(data), shared_normalizer())


def stream(
    check: GuardrailStream, chunks: list[str], field: str = "content"
) -> tuple[list[str], CheckResult | None, list[Decision]]:
    """Feed chunks: what was released after each chunk (and the finish), the stopping result, decisions."""
    released: list[str] = []
    decisions: list[Decision] = []
    for chunk in chunks:
        result = check.feed(field, chunk)  # type: ignore[arg-type]
        released.append(result.text)
        decisions += result.decisions or []
        if result.stop is not None:
            return released, result, decisions
    result = check.finish(field)  # type: ignore[arg-type]
    released.append(result.text)
    decisions += result.decisions or []
    return released, (result if result.stop is not None else None), decisions

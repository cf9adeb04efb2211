"""The policy fields for tools and structured output: where values, generation bounds, the default bundle."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.policy import load_bundle
from gateway.policy.sections import ALL_WHERE, GenerationSection, LoopsSection, WordRule
from tests.support.gateway import DEFAULT_POLICIES


def test_tool_arguments_is_a_where_value_and_the_default_of_rules_and_loops() -> None:
    assert "tool_arguments" in ALL_WHERE
    rule = WordRule.model_validate(
        {"id": "w", "category": "c", "action": "block", "where": ["tool_arguments"]}
    )
    assert rule.where == ["tool_arguments"]
    assert "tool_arguments" in WordRule(id="w", category="c", action="block").where
    assert "tool_arguments" in LoopsSection().where
    with pytest.raises(ValidationError):
        WordRule.model_validate({"id": "w", "category": "c", "action": "block", "where": ["tools"]})


def test_generation_bounds_validate() -> None:
    section = GenerationSection()
    assert (section.max_tools, section.max_tool_calls) == (64, 16)
    for bad in (
        {"max_tools": 129},
        {"max_tool_calls": 0},
        {"max_schema_depth": 0},
        {"max_tool_schema_bytes": 0},
    ):
        with pytest.raises(ValidationError):
            GenerationSection.model_validate(bad)


def test_default_bundle_sets_the_tool_bounds() -> None:
    bundle = load_bundle(DEFAULT_POLICIES).bundle
    assert bundle.generation.max_tool_calls == 16
    assert bundle.generation.max_response_schema_bytes == 65536
    assert "tool_arguments" in bundle.loops.where
    assert bundle.clients.clients["demo-app"].tools is True

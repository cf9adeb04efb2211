"""The stream scanner on tool-call arguments: scanned as ``tool_arguments``, one call at a time, never masked."""

from __future__ import annotations

import json

import pytest

from gateway.guardrails import CompiledGuardrails
from tests.support.guardrails import Build, stream

RULES = [
    {"id": "w.block", "category": "violence", "action": "block", "words": ["forbidden demo"]},
    {"id": "w.mask", "category": "confidential", "action": "mask", "words": ["bluefin"]},
    {"id": "w.out", "category": "c", "action": "block", "where": ["output"], "words": ["outonly"]},
]


@pytest.fixture
def guard(build: Build) -> CompiledGuardrails:
    return build(RULES)


def _splits(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 7])
def test_a_blocked_word_in_arguments_is_never_released(guard: CompiledGuardrails, size: int) -> None:
    args = json.dumps({"text": "say forbidden demo twice"})
    released, stop, decisions = stream(guard.stream_check(None), _splits(args, size), "tool_arguments")
    assert stop is not None and stop.stop is not None
    assert stop.stop.finish_reason == "content_filter"
    assert "".join(released) == '{"text": "say '
    assert [(d.rule, d.where) for d in decisions] == [("w.block", "tool_arguments")]


@pytest.mark.parametrize("size", [1, 3])
def test_a_mask_rule_acts_as_a_block_in_arguments(guard: CompiledGuardrails, size: int) -> None:
    args = '{"project": "bluefin"}'
    released, stop, decisions = stream(guard.stream_check(None), _splits(args, size), "tool_arguments")
    assert stop is not None and stop.stop is not None
    assert "".join(released) == '{"project": "'
    assert [(d.rule, d.action, dict(d.detail)) for d in decisions] == [
        ("w.mask", "block", {"mask_as_block": 1})
    ]


def test_the_same_mask_masks_plain_content_but_blocks_json_content(guard: CompiledGuardrails) -> None:
    plain, stop, _ = stream(guard.stream_check(None), ["the ", "bluefin", " plan"])
    assert stop is None and "".join(plain) == "the ******* plan"
    released, stop, decisions = stream(
        guard.stream_check(None, json_content=True), ['{"p": "', "bluefin", '"}']
    )
    assert stop is not None and "".join(released) == '{"p": "'
    assert decisions[-1].action == "block"


def test_rules_apply_where_the_policy_says(guard: CompiledGuardrails) -> None:
    released, stop, _ = stream(guard.stream_check(None), ['{"a": "outonly"}'], "tool_arguments")
    assert stop is None and "".join(released) == '{"a": "outonly"}'


def test_each_call_is_scanned_on_its_own(guard: CompiledGuardrails) -> None:
    check = guard.stream_check(None)
    first = check.feed("tool_arguments", '{"a": "forbidden').text
    first += check.finish("tool_arguments").text
    assert first == '{"a": "forbidden'  # complete call: its tail is released, not carried into the next
    second = check.feed("tool_arguments", ' demo"}')
    second_end = check.finish("tool_arguments")
    assert second.stop is None and second_end.stop is None
    assert second.text + second_end.text == ' demo"}'
    # a block inside the next call is still caught
    blocked = check.feed("tool_arguments", '{"b": "forbidden demo"}')
    end = check.finish("tool_arguments")
    assert blocked.text + end.text == '{"b": "' and end.stop is not None


def test_whole_text_scan_of_arguments_blocks_on_a_mask(guard: CompiledGuardrails) -> None:
    verdict = guard.scan('{"p": "bluefin"}', "tool_arguments")
    assert verdict.action == "block" and verdict.text == '{"p": "bluefin"}'
    assert guard.scan("the bluefin", "output").action == "mask"

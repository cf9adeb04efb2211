"""A mask inside the JSON arguments of a tool call in the history is kept only when it provably stays in strings."""

from __future__ import annotations

import pytest

from gateway.guardrails import mask_spans
from gateway.relay.input_guard import masks_kept_json


def _check(text: str, word: str, mask_char: str = "*") -> bool:
    start = text.index(word)
    spans = [(start, start + len(word))]
    return masks_kept_json(text, mask_spans(text, spans, mask_char), spans, mask_char)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ('{"to": "jane@example.com"}', "jane@example.com"),
        ('{"to": "jane@example.com"}', "e@ex"),
        ('{"jane@example.com": 1}', "jane@example.com"),  # a key is a string too
    ],
)
def test_spans_inside_strings_are_kept(text: str, span: str) -> None:
    assert _check(text, span)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ('["ab", "cd"]', '", "'),  # crosses two strings: still parses, but the structure changed
        ('{"n": 13812345678}', "13812345678"),  # a number
        ('{"t": "a\\nb"}', "nb"),  # splits an escape sequence
        ('{"t": "x"} trailing', "trailing"),  # outside any value
        ("not json at all", "json"),
    ],
)
def test_spans_that_may_leave_a_string_act_as_a_block(text: str, span: str) -> None:
    assert not _check(text, span)


def test_a_mask_character_json_allows_outside_strings_proves_nothing() -> None:
    assert not _check('{"to": "jane@example.com"}', "jane@example.com", mask_char="0")

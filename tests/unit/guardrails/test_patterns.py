"""Pattern rules: the default PII rules, validators, width folding and the fail-closed timeout."""

from __future__ import annotations

import pytest

from gateway.guardrails import CompiledGuardrails
from tests.support.guardrails import Build


@pytest.mark.parametrize(
    ("text", "rule", "masked"),
    [
        ("电话13812345678。", "pii.cn_mobile", "电话***********。"),
        ("call +86 138-1234-5678", None, None),  # dashes inside the number: not this pattern's format
        ("电话：１３８１２３４５６７８", "pii.cn_mobile", "电话：***********"),  # full-width digits
        ("身份证11010519491231002X。", "pii.cn_resident_id", "身份证******************。"),
        ("卡号 4111 1111 1111 1111 谢谢", "pii.bank_card", "卡号 ******************* 谢谢"),
        ("mail me: zhang.san@corp.example.cn!", "pii.email", "mail me: " + "*" * 25 + "!"),
    ],
)
def test_default_pii_rules(
    default_guardrails: CompiledGuardrails, text: str, rule: str | None, masked: str | None
) -> None:
    verdict = default_guardrails.scan(text, "output")
    if rule is None:
        assert all(h.rule != "pii.cn_mobile" for h in verdict.hits)
        return
    assert [h.rule for h in verdict.hits] == [rule]
    assert verdict.action == "mask"
    assert verdict.text == masked


@pytest.mark.parametrize(
    "text",
    [
        "身份证110105194912310021",  # bad check character
        "卡号 4111 1111 1111 1112",  # fails Luhn
        "订单号 138123456789",  # 12 digits: not a mobile number
        "流水号 213812345678",  # the mobile number is part of a longer run of digits
    ],
)
def test_invalid_numbers_do_not_hit(default_guardrails: CompiledGuardrails, text: str) -> None:
    hits = {h.rule for h in default_guardrails.scan(text, "output").hits}
    assert not hits & {"pii.cn_resident_id", "pii.bank_card", "pii.cn_mobile"}


def test_api_key_blocks(default_guardrails: CompiledGuardrails) -> None:
    verdict = default_guardrails.scan("key=sk-" + "a1B2" * 8, "input")
    assert verdict.action == "block"
    assert [h.rule for h in verdict.hits] == ["secrets.api_key"]


def test_ignore_case(build: Build) -> None:
    guard = build(
        [
            {
                "id": "p.i",
                "kind": "pattern",
                "category": "c",
                "action": "flag",
                "pattern": "secret-\\d+",
                "ignore_case": True,
            }
        ]
    )
    assert guard.scan("SECRET-42", "input").action == "flag"


def test_a_pattern_that_times_out_fails_closed(build: Build) -> None:
    guard = build(
        [{"id": "p.slow", "kind": "pattern", "category": "c", "action": "flag", "pattern": "(a+)+b"}],
        pattern_timeout_ms=1,
    )
    text = "a" * 5000 + "c"
    verdict = guard.scan(text, "input")
    assert verdict.action == "block"
    assert [(h.rule, h.start, h.end) for h in verdict.hits] == [("p.slow", 0, len(text))]
    # and in a stream: the scan times out, the stream stops instead of releasing unchecked text
    check = guard.stream_check(None)
    result = check.feed("content", text)
    if result.stop is None:
        result = check.finish("content")
    assert result.stop is not None
    assert result.stop.extension["rule"] == "p.slow"


@pytest.mark.parametrize("pattern", ["(?:a+)+b", "(a+)+b"])  # judged by partial matching, and not
def test_a_pattern_that_times_out_fails_closed_in_a_stream_of_small_chunks(
    build: Build, pattern: str
) -> None:
    guard = build(
        [{"id": "p.slow", "kind": "pattern", "category": "c", "action": "flag", "pattern": pattern}],
        pattern_timeout_ms=1,
    )
    check = guard.stream_check(None)
    released = ""
    for _ in range(100):
        result = check.feed("content", "a" * 50)
        released += result.text
        if result.stop is not None:
            break
    else:
        result = check.finish("content")
    assert result.stop is not None
    assert result.stop.extension["rule"] == "p.slow"
    assert released == ""

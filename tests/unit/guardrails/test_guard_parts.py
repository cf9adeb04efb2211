"""The guard model's verdict grammar and parser, and the circuit breaker."""

from __future__ import annotations

import re

import pytest

from gateway.guardrails.breaker import CircuitBreaker
from gateway.guardrails.guard_verdict import VerdictFormatError, parse_verdict, verdict_regex


def test_prompt_verdict_parses_categories() -> None:
    verdict = parse_verdict("Safety: Unsafe\nCategories: Violent, PII\n", response=False)
    assert (verdict.safety, verdict.categories, verdict.refusal) == ("Unsafe", ("Violent", "PII"), None)


def test_response_verdict_needs_refusal_line() -> None:
    verdict = parse_verdict("Safety: Safe\nCategories: None\nRefusal: Yes", response=True)
    assert (verdict.safety, verdict.categories, verdict.refusal) == ("Safe", (), True)
    with pytest.raises(VerdictFormatError):
        parse_verdict("Safety: Safe\nCategories: None", response=True)


@pytest.mark.parametrize(
    "text",
    [
        "Safety: unsafe\nCategories: Violent",  # case matters
        "Safety: Unsafe\nCategories: Weapons",  # not a category of the model
        "Safety: Unsafe\nCategories: Violent\nRefusal: No",  # a response line in a prompt verdict
        "I think this is Safety: Safe\nCategories: None",
        "",
    ],
)
def test_anything_else_is_not_a_verdict(text: str) -> None:
    with pytest.raises(VerdictFormatError):
        parse_verdict(text, response=False)


def test_regex_sent_to_the_engine_is_the_parsers_grammar() -> None:
    assert re.fullmatch(verdict_regex(response=False), "Safety: Controversial\nCategories: Jailbreak")
    assert re.fullmatch(verdict_regex(response=True), "Safety: Unsafe\nCategories: PII\nRefusal: No")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_and_probes_once_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert (breaker.state, breaker.allow(), breaker.opened) == ("open", False, 1)
    clock.now = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.failure()
    assert (breaker.state, breaker.opened) == ("open", 2)
    clock.now = 20.0
    assert breaker.allow()
    breaker.success()
    assert (breaker.state, breaker.allow()) == ("closed", True)


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock)
    breaker.failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()

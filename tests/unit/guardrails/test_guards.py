"""The guard runtime against the fake guard engine and webhook on a real socket: verdict mapping, errors,
the cache bound, and guards kept across a policy reload while their rule is unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.guardrails.guard_http import GuardInput
from gateway.guardrails.guards import GuardRegistry, GuardSetupError
from gateway.policy.sections import PolicyBundle
from tests.fakes.guard import WEBHOOK_SECRET, FakeGuard, running_guard


@pytest.fixture
async def guard() -> AsyncIterator[FakeGuard]:
    with running_guard(slow_s=2.0) as fake:
        yield fake


def bundle(*rules: dict[str, Any]) -> PolicyBundle:
    return PolicyBundle.model_validate({"guardrails": {"rules": list(rules)}})


def qwen(guard: FakeGuard, **overrides: Any) -> dict[str, Any]:
    rule = {"id": "g.qwen", "kind": "classifier", "engine": {"url": guard.url}, "model": "guard"}
    return {**rule, **overrides}


async def judge(registry: GuardRegistry, policy: PolicyBundle, text: str, where: str = "input") -> Any:
    (guard,) = registry.prepare(policy).guards
    decision = await guard.judge(GuardInput(text, where, "c1", "the prompt"), guard.rule.mode)
    return None if decision is None else (decision.action, decision.category, decision.detail)


async def test_verdicts_map_through_the_rules_categories(guard: FakeGuard) -> None:
    registry = GuardRegistry()
    policy = bundle(qwen(guard, categories={"Violent": "flag"}, controversial="block"))
    try:
        assert await judge(registry, policy, "a bomb") == ("flag", "Violent", ())
        assert await judge(registry, policy, "some gossip") == ("block", "Politically Sensitive Topics", ())
        assert await judge(registry, policy, "hello") is None
        assert await judge(registry, policy, "a bomb", where="output") == ("flag", "Violent", ())
    finally:
        await registry.aclose()
    assert guard.calls[-1]["messages"] == [
        {"role": "user", "content": "the prompt"},
        {"role": "assistant", "content": "a bomb"},
    ]


async def test_errors_become_on_error_decisions(guard: FakeGuard) -> None:
    registry = GuardRegistry()
    try:
        failing = bundle(qwen(guard, on_error="allow", timeout_ms=100))
        assert await judge(registry, failing, "answer slowly") == (
            "flag",
            "guard_error",
            (("error", "timeout"),),
        )
        assert await judge(registry, failing, "crash") == ("flag", "guard_error", (("error", "http_500"),))
        blocking = bundle(qwen(guard, on_error="block"))
        assert (await judge(registry, blocking, "crash"))[:2] == ("block", "guard_error")
    finally:
        await registry.aclose()


async def test_cache_is_bounded_per_rule(guard: FakeGuard) -> None:
    registry = GuardRegistry()
    policy = bundle(qwen(guard, cache_size=2))
    try:
        for text in ("one", "two", "one", "three", "one", "two"):
            await judge(registry, policy, text)
    finally:
        await registry.aclose()
    # one, two cached; one hit; three evicts two; one hit; two called again
    assert [c["messages"][0]["content"] for c in guard.calls] == ["one", "two", "three", "two"]


async def test_webhook_answers_and_a_bad_secret_is_an_error(guard: FakeGuard, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(WEBHOOK_SECRET, encoding="utf-8")
    hook = {"id": "g.hook", "kind": "webhook", "url": guard.webhook_url, "secret_file": str(secret)}
    registry = GuardRegistry()
    try:
        assert await judge(registry, bundle(hook), "the secret-plan") == ("block", "dlp", ())
        assert await judge(registry, bundle(hook), "my salary") == ("flag", "hr", ())
        secret.write_text("wrong", encoding="utf-8")  # a rotated secret file takes effect on the next load
        assert (await judge(registry, bundle(hook), "hello"))[1:] == ("guard_error", (("error", "http_401"),))
    finally:
        await registry.aclose()


async def test_guards_survive_a_reload_while_their_rule_is_unchanged(guard: FakeGuard) -> None:
    registry = GuardRegistry()
    try:
        (first,) = registry.prepare(bundle(qwen(guard))).guards
        (again,) = registry.prepare(bundle(qwen(guard))).guards
        (changed,) = registry.prepare(bundle(qwen(guard, timeout_ms=10))).guards
    finally:
        await registry.aclose()
    assert first is again and changed is not first


def test_setup_problems_fail_the_load(tmp_path: Path) -> None:
    registry = GuardRegistry()
    by_role = {"id": "g.role", "kind": "classifier", "engine": {"role": "guard"}, "model": "m"}
    hook = {"id": "g.hook", "kind": "webhook", "url": "http://x/", "secret_file": str(tmp_path / "none")}
    with pytest.raises(GuardSetupError) as info:
        registry.prepare(bundle(by_role, hook))
    assert "'g.role': no engine of role 'guard'" in str(info.value)
    assert "'g.hook': cannot read secret file" in str(info.value)

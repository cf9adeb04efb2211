"""Guard models and webhooks on the input, through the running gateway with the openai SDK.

A fake Qwen3Guard engine and a fake webhook service (``tests/fakes/guard.py``) judge the prompt once, before
the engine is called: an Unsafe category the rule blocks is a 400 ``content_filter`` naming rule and category;
a guard that fails follows ``on_error``; repeated failures open the breaker (no calls) until a probe succeeds;
identical prompts are judged once (the verdict cache).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.telemetry.audit import content_hmac
from tests.fakes.engine import FakeEngine
from tests.fakes.guard import WEBHOOK_SECRET, FakeGuard, running_guard
from tests.fakes.script import Script
from tests.support.gateway import DEFAULT_POLICIES, RunningGateway, gateway_settings, run_gateway, wait_for

MODEL = "qwen3-8b"


def classifier(guard: FakeGuard, **overrides: Any) -> dict[str, Any]:
    rule = {
        "id": "guard.qwen",
        "kind": "classifier",
        "engine": {"url": guard.url},
        "model": "Qwen/Qwen3Guard-Gen-0.6B",
        "categories": {"Violent": "block"},
        "where": ["input"],
        "timeout_ms": 5000,
    }
    return {**rule, **overrides}


def webhook(guard: FakeGuard, secret_file: Path) -> dict[str, Any]:
    secret_file.write_text(WEBHOOK_SECRET + "\n", encoding="utf-8")
    return {
        "id": "guard.dlp",
        "kind": "webhook",
        "url": guard.webhook_url,
        "secret_file": str(secret_file),
        "where": ["input"],
    }


@contextmanager
def guarded_gateway(tmp_path: Path, engine: FakeEngine, *rules: dict[str, Any]) -> Iterator[RunningGateway]:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_POLICIES, bundle)
    path = bundle / "guardrails.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["rules"] += list(rules)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with run_gateway(gateway_settings(tmp_path, engine.url, policies=bundle)) as running:
        yield running


@pytest.fixture
def guard() -> Iterator[FakeGuard]:
    with running_guard(slow_s=3.0) as fake:
        yield fake


def ask(gw: RunningGateway, text: str, max_tokens: int = 8) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    return httpx.post(f"{gw.api}/chat/completions", json=body, timeout=20)


def guard_states(gw: RunningGateway) -> dict[str, str]:
    states: dict[str, str] = httpx.get(f"{gw.url}/readyz", timeout=10).json()["guards"]
    return states


def test_unsafe_prompt_is_blocked_with_rule_and_category(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    with (
        guarded_gateway(tmp_path, fake_engine, classifier(guard)) as gw,
        openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0) as sdk,
    ):
        before = fake_engine.requests_total
        with pytest.raises(openai.BadRequestError) as info:
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "how to build a bomb"}]
            )
        assert info.value.code == "content_filter"
        assert "'guard.qwen'" in info.value.message and "'Violent'" in info.value.message
        assert "bomb" not in info.value.message
        assert fake_engine.requests_total == before, "nothing reaches the engine"
        path = gw.settings.audit_path
        wait_for(lambda: "guard.qwen" in (path.read_text("utf-8") if path.exists() else ""), within=5.0)
        records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        (record,) = [r for r in records if r.get("rule") == "guard.qwen"]
        key = bytes.fromhex((gw.settings.data_dir / "audit.key").read_text().strip())
        assert (record["category"], record["action"], record["where"]) == ("Violent", "block", "input")
        assert record["content_hmac"] == content_hmac(key, "how to build a bomb")
        assert "bomb" not in path.read_text("utf-8")
        ok = sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        assert ok.choices[0].finish_reason in ("stop", "length")
    sent = guard.calls[0]
    assert sent["messages"] == [{"role": "user", "content": "how to build a bomb"}]
    assert sent["structured_outputs"]["regex"].startswith("Safety: (Safe|Unsafe|Controversial)")


def test_flagged_category_passes_and_shadow_never_blocks(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    rules = (
        classifier(guard, categories={"Violent": "flag"}),
        classifier(guard, id="guard.shadow", mode="shadow"),
    )
    with guarded_gateway(tmp_path, fake_engine, *rules) as gw:
        assert ask(gw, "a bomb in a film plot").status_code == 200
    assert len(guard.calls) == 2  # each rule judged the prompt


def test_webhook_blocks_with_its_category_and_gets_the_contract(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    with guarded_gateway(tmp_path, fake_engine, webhook(guard, tmp_path / "hook.secret")) as gw:
        blocked = ask(gw, "the secret-plan for Q3")
        assert blocked.status_code == 400
        error = blocked.json()["error"]
        assert (error["code"], "'dlp'" in error["message"]) == ("content_filter", True)
        assert ask(gw, "what is my salary").status_code == 200  # flag: recorded, not acted on
    assert guard.calls[0] == {
        "text": "the secret-plan for Q3",
        "where": "input",
        "client": "anonymous",
        "rule": "guard.dlp",
    }


@pytest.mark.parametrize(("on_error", "status"), [("block", 400), ("allow", 200)])
def test_guard_down_follows_on_error(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard, on_error: str, status: int
) -> None:
    guard.down = True
    with guarded_gateway(tmp_path, fake_engine, classifier(guard, on_error=on_error)) as gw:
        response = ask(gw, "hello")
    assert response.status_code == status
    if status == 400:
        assert "'guard_error'" in response.json()["error"]["message"]


def test_a_slow_guard_times_out_into_on_error(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    with guarded_gateway(tmp_path, fake_engine, classifier(guard, timeout_ms=200)) as gw:
        response = ask(gw, "answer me slowly")
    assert response.status_code == 400
    assert "'guard_error'" in response.json()["error"]["message"]


def test_breaker_opens_and_recovers(tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard) -> None:
    rule = classifier(guard, on_error="block", breaker_failures=2, breaker_cooldown_s=1.0, cache_size=0)
    guard.down = True
    with guarded_gateway(tmp_path, fake_engine, rule) as gw:
        assert guard_states(gw) == {"guard.qwen": "closed"}
        assert [ask(gw, f"hello {i}").status_code for i in range(2)] == [400, 400]
        assert guard_states(gw) == {"guard.qwen": "open"}
        assert ask(gw, "hello 3").status_code == 400
        assert len(guard.calls) == 2  # open: on_error applied without a call
        guard.down = False
        wait_for(lambda: guard_states(gw) == {"guard.qwen": "half_open"}, within=10, interval=0.1)
        assert ask(gw, "hello 4").status_code == 200  # the probe succeeds
        assert guard_states(gw) == {"guard.qwen": "closed"}
        metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
    assert len(guard.calls) == 3
    assert 'menshen_guard_calls_total{outcome="breaker_open",rule="guard.qwen"} 1.0' in metrics


def test_identical_prompts_are_judged_once(tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard) -> None:
    with guarded_gateway(tmp_path, fake_engine, classifier(guard)) as gw:
        assert [ask(gw, "the same question").status_code for _ in range(2)] == [200, 200]
        assert ask(gw, "another question").status_code == 200
    assert len(guard.calls) == 2


def test_a_guard_rule_whose_secret_is_missing_fails_the_load(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    rule = {**webhook(guard, tmp_path / "hook.secret"), "secret_file": str(tmp_path / "missing")}
    with (
        pytest.raises(Exception, match="cannot read secret file"),
        guarded_gateway(tmp_path, fake_engine, rule),
    ):
        pass


# --- output, watch mode -----------------------------------------------------------------------------------


def _stream(gw: RunningGateway, prompt: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """The streamed content, the finish reason and the ``menshen`` extension of the final chunk."""
    with openai.OpenAI(base_url=gw.api, api_key="unused", max_retries=0, timeout=20) as sdk:
        stream = sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=400
        )
        text, finish, extension = "", None, None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            extension = (chunk.model_extra or {}).get("menshen") or extension
    return text, finish, extension


def output_rule(guard: FakeGuard) -> dict[str, Any]:
    return classifier(guard, where=["output"], checkpoint_chars=32)


def test_watch_cuts_an_unsafe_answer_with_content_filter(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    words = [" word"] * 10 + [" bomb"] + [" more"] * 150
    fake_engine.scripts["unsafe"] = Script.of(words, rate=100)
    with guarded_gateway(tmp_path, fake_engine, output_rule(guard)) as gw:
        text, finish, extension = _stream(gw, "[[script:unsafe]] tell me")
    assert finish == "content_filter"
    assert extension is not None
    assert (extension["rule"], extension["category"]) == ("guard.qwen", "Violent")
    assert len(text) < len("".join(words))  # cut well before the end: the engine was stopped
    sent = guard.calls[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant"]
    assert sent["structured_outputs"]["regex"].endswith("\\nRefusal: (Yes|No)")


def test_watch_judges_the_end_before_the_finish_chunk(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    fake_engine.scripts["late"] = Script.of([" fine"] * 3 + [" bomb", " ok"])  # below one checkpoint
    fake_engine.scripts["safe"] = Script.of([" all", " is", " well", "."] * 5)
    with guarded_gateway(tmp_path, fake_engine, output_rule(guard)) as gw:
        _, finish, _ = _stream(gw, "[[script:late]] hi")
        assert finish == "content_filter"
        text, finish, _ = _stream(gw, "[[script:safe]] hi")
        assert finish == "stop"
    assert guard.calls[-1]["messages"][-1]["content"] == text  # the final checkpoint covers the whole answer


def test_watch_guard_down_follows_on_error(tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard) -> None:
    guard.down = True
    fake_engine.scripts["any"] = Script.of([" some", " text"])
    with guarded_gateway(tmp_path, fake_engine, {**output_rule(guard), "on_error": "allow"}) as gw:
        assert _stream(gw, "[[script:any]] hi")[1] == "stop"


def test_watch_on_a_non_streamed_answer(tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard) -> None:
    fake_engine.scripts["unsafe"] = Script.of([" a", " bomb", " here"])
    with guarded_gateway(tmp_path, fake_engine, output_rule(guard)) as gw:
        body = ask(gw, "[[script:unsafe]] hi").json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["menshen"]["category"] == "Violent"


# --- output, hold mode ------------------------------------------------------------------------------------


def hold_rule(guard: FakeGuard, **overrides: Any) -> dict[str, Any]:
    return {**output_rule(guard), "stream_mode": "hold", **overrides}


def test_hold_never_releases_text_before_its_verdict(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    words = [" word"] * 10 + [" bomb"] + [" more"] * 40
    fake_engine.scripts["unsafe"] = Script.of(words)
    with guarded_gateway(tmp_path, fake_engine, hold_rule(guard)) as gw:
        text, finish, extension = _stream(gw, "[[script:unsafe]] tell me")
    assert finish == "content_filter"
    assert extension is not None and extension["category"] == "Violent"
    assert "bomb" not in text
    assert "".join(words).startswith(text)  # only text a Safe verdict covered, in order


def test_hold_releases_a_safe_answer_whole(tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard) -> None:
    script = Script.lorem(80, seed=5)
    answer = "".join(p.text for p in script.pieces)
    fake_engine.scripts["safe"] = script
    with guarded_gateway(tmp_path, fake_engine, hold_rule(guard)) as gw:
        text, finish, _ = _stream(gw, "[[script:safe]] hi")
        body = ask(gw, "[[script:safe]] hi", max_tokens=400).json()
    assert (text, finish) == (answer, "stop")
    assert body["choices"][0]["message"]["content"] == answer


def test_hold_with_the_guard_down_and_on_error_block_releases_nothing(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    guard.down = True
    fake_engine.scripts["any"] = Script.lorem(60, seed=2)
    with guarded_gateway(tmp_path, fake_engine, hold_rule(guard)) as gw:
        text, finish, extension = _stream(gw, "[[script:any]] hi")
    assert (text, finish) == ("", "content_filter")
    assert extension is not None and extension["category"] == "guard_error"


def test_watch_on_reasoning_cuts_with_its_place(
    tmp_path: Path, fake_engine: FakeEngine, guard: FakeGuard
) -> None:
    fake_engine.scripts["think"] = Script.of(
        [" fine"], reasoning=[" plan", " a", " bomb", "."] + [" more"] * 5
    )
    rule = classifier(guard, where=["reasoning"], checkpoint_chars=16)
    with guarded_gateway(tmp_path, fake_engine, rule) as gw:
        _, finish, extension = _stream(gw, "[[script:think]] hi")
    assert finish == "content_filter"
    assert extension is not None and (extension["where"], extension["category"]) == ("reasoning", "Violent")

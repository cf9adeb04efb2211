"""Observability through the running gateway: the span tree, trace context to the engine, OTLP export,
/metrics, scrubbed logs, the audit trail and the access log.

Spans are captured with an in-memory exporter on the app's own tracer provider (``AppParts.telemetry``),
logs with the production ``configure_logging`` set-up into a buffer plus a raw handler on the root logger.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import AppParts
from gateway.cli import main as cli_main
from gateway.telemetry import (
    DECISION_EVENT,
    SPAN_ADMISSION,
    SPAN_AUTH,
    SPAN_INPUT_GUARD,
    SPAN_STREAM,
    Telemetry,
    content_hmac,
    setup_tracing,
)
from gateway.telemetry.logging import configure_logging
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import (
    DEFAULT_POLICIES,
    RunningGateway,
    gateway_settings,
    run_gateway,
    wait_for,
)
from tests.support.logcapture import Logs, RawCapture, saved_logging
from tests.support.otlp import otlp_http_receiver
from tests.support.ports import free_port

MODEL = "qwen3-8b"
SERVER_SPAN = "POST /v1/chat/completions"
ENGINE_SPAN = f"chat {MODEL}"
BANNED = "禁词示例"  # policies/default/lists/violence.txt, rule words.violence (block)
ANSWER = "The capital of France is Paris."


# --- fixtures and helpers ------------------------------------------------------------------------------


@dataclass
class Traced:
    exporter: InMemorySpanExporter
    telemetry: Telemetry

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def trace(self, trace_id: str) -> dict[str, ReadableSpan]:
        """The spans of one trace, by name (each name appears once per request)."""
        spans = [s for s in self.spans() if _hex(s.context.trace_id) == trace_id]
        by_name = {s.name: s for s in spans}
        assert len(by_name) == len(spans), [s.name for s in spans]
        return by_name

    def wait_server_span(self, count: int = 1) -> list[ReadableSpan]:
        """Server spans end after the last body byte was sent: wait for them, not only the response."""
        wait_for(lambda: len(self.server_spans()) >= count, within=5)
        return self.server_spans()

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind == SpanKind.SERVER]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(exporter, Telemetry(provider))
    provider.shutdown()


@contextmanager
def _running(
    tmp_path: Path, fake: FakeEngine, traced: Traced | None = None, **overrides: Any
) -> Iterator[RunningGateway]:
    parts = AppParts(telemetry=traced.telemetry) if traced is not None else None
    with run_gateway(gateway_settings(tmp_path / "data", fake.url, **overrides), parts) as running:
        yield running


def _hex(value: int, width: int = 32) -> str:
    return format(value, f"0{width}x")


def _prompt(fake: FakeEngine, name: str, script: Script, text: str = "question") -> str:
    fake.scripts[name] = script
    return f"[[script:{name}]] {text}"


def _chat(gateway: RunningGateway, prompt: str, token: str | None = None, **body: Any) -> httpx.Response:
    """A chat request with httpx (streamed when asked: the whole SSE body is read)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(body.pop("headers", {}))
    payload = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **body}
    return httpx.post(gateway.api + "/chat/completions", json=payload, headers=headers, timeout=20)


def _sse_content(response: httpx.Response) -> tuple[str, str | None]:
    """(content, finish_reason) of a raw SSE response body."""
    content, finish = "", None
    for line in response.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices", []):
            content += choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
    return content, finish


def _tiny_limit_bundle(tmp_path: Path, requests: str) -> Path:
    """policies/default with the standard tier (anonymous and scope-only clients) limited to ``requests``."""
    target = tmp_path / "bundle"
    shutil.copytree(DEFAULT_POLICIES, target)
    path = target / "limits.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["tiers"]["standard"]["requests"] = requests
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return target


def _builtin(tmp_path: Path) -> dict[str, Any]:
    return {
        "auth": "builtin",
        "auth_key_file": tmp_path / "issuer-keys.json",
        "auth_secrets_file": tmp_path / "client-secrets.yaml",
    }


def _issue_token(
    gateway: RunningGateway, tmp_path: Path, client_id: str, capsys: pytest.CaptureFixture[str]
) -> str:
    """``gateway client add`` then the built-in issuer's client-credentials grant."""
    assert cli_main(["client", "add", client_id, "--scope", "llm.chat", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    secret = next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("client_secret:")
    )
    response = httpx.post(
        gateway.url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _audit(gateway: RunningGateway) -> list[dict[str, Any]]:
    path = gateway.settings.audit_path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- metrics helpers -----------------------------------------------------------------------------------


def _scrape(url: str, **kwargs: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _labels(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), v in samples.items() if n == name and v > 0}


# --- logs ----------------------------------------------------------------------------------------------


class _NotMainThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != threading.main_thread().name


@contextmanager
def _capture_logs() -> Iterator[Logs]:
    """``configure_logging`` as ``gateway serve`` runs it, at DEBUG into a buffer, plus a raw root handler.

    Entered before the gateway is built, as ``gateway serve`` does: the app must keep this set-up
    (``test_serve_keeps_the_scrubbing_json_log_handler``), so start-up logs are searched too.
    """
    with saved_logging():
        rendered, raw = io.StringIO(), RawCapture()
        configure_logging("DEBUG", stream=rendered)
        root = logging.getLogger()
        for handler in root.handlers:
            if handler.get_name() == "menshen":
                # The test's own HTTP client (main thread) is not the gateway.
                handler.addFilter(_NotMainThread())
        root.addHandler(raw)
        yield Logs(raw, rendered)


# --- spans ---------------------------------------------------------------------------------------------


def test_streamed_chat_span_tree_and_genai_attributes(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path
) -> None:
    prompt = _prompt(fake_engine, "answer", Script.of(ANSWER))
    with _running(tmp_path, fake_engine, traced) as gateway:
        with openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=20) as client:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": prompt}],
                    stream=True,
                    max_tokens=64,
                    temperature=0.25,
                    stream_options={"include_usage": True},
                )
            )
        (server,) = traced.wait_server_span()
        policy_version = gateway.state.policy.current.short_version
    usage = chunks[-1].usage
    assert usage is not None

    spans = traced.trace(_hex(server.context.trace_id))
    assert set(spans) == {SERVER_SPAN, SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD, ENGINE_SPAN, SPAN_STREAM}
    for name in (SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD, ENGINE_SPAN, SPAN_STREAM):
        parent = spans[name].parent
        assert parent is not None, name
        assert parent.span_id == server.context.span_id, name
    assert spans[ENGINE_SPAN].kind == SpanKind.CLIENT
    assert spans[SPAN_STREAM].kind == SpanKind.INTERNAL
    # The phases happen in order, inside the server span.
    starts = [
        spans[n].start_time or 0
        for n in (SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD, ENGINE_SPAN, SPAN_STREAM)
    ]
    assert starts == sorted(starts)
    assert (server.start_time or 0) <= starts[0]
    assert (spans[SPAN_STREAM].end_time or 0) <= (server.end_time or 0)

    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.temperature"] == 0.25
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    ttft = attrs["gen_ai.server.time_to_first_token"]
    assert isinstance(ttft, float)
    assert 0 < ttft * 1e9 < (server.end_time or 0) - (server.start_time or 0)
    assert attrs["menshen.client_id"] == "anonymous"
    assert attrs["menshen.policy.version"] == policy_version
    assert attrs["http.response.status_code"] == 200
    engine_attrs = dict(spans[ENGINE_SPAN].attributes or {})
    assert engine_attrs["gen_ai.request.model"] == MODEL
    assert engine_attrs["server.port"] == fake_engine.port


def test_blocked_output_stream_carries_the_decision_event(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path
) -> None:
    before = "ok so "
    prompt = _prompt(fake_engine, "banned", Script.of(f"{before}{BANNED} and more words after it"))
    with _running(tmp_path, fake_engine, traced) as gateway:
        response = _chat(gateway, prompt, stream=True)
        (server,) = traced.wait_server_span()
    content, finish = _sse_content(response)
    assert finish == "content_filter"
    assert BANNED not in content

    spans = traced.trace(_hex(server.context.trace_id))
    (event,) = [e for e in spans[SPAN_STREAM].events if e.name == DECISION_EVENT]
    attrs = dict(event.attributes or {})
    assert attrs["menshen.rule"] == "words.violence"
    assert attrs["menshen.category"] == "violence"
    assert attrs["menshen.action"] == "block"
    assert attrs["menshen.mode"] == "enforce"
    assert attrs["menshen.where"] == "output"
    assert (attrs["menshen.offset.start"], attrs["menshen.offset.end"]) == (
        len(before),
        len(before) + len(BANNED),
    )
    assert tuple(dict(server.attributes or {})["gen_ai.response.finish_reasons"]) == ("content_filter",)  # type: ignore[arg-type]
    assert BANNED not in "".join(s.to_json() for s in traced.spans())


def test_blocked_input_carries_the_decision_event_on_the_input_guard_span(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path
) -> None:
    key = "sk-" + secrets.token_hex(14)
    with _running(tmp_path, fake_engine, traced) as gateway:
        response = _chat(gateway, f"my key is {key}")
        (server,) = traced.wait_server_span()
    assert response.status_code == 400
    spans = traced.trace(_hex(server.context.trace_id))
    assert ENGINE_SPAN not in spans, "a blocked prompt never reaches the engine"
    (event,) = [e for e in spans[SPAN_INPUT_GUARD].events if e.name == DECISION_EVENT]
    attrs = dict(event.attributes or {})
    assert (attrs["menshen.rule"], attrs["menshen.where"]) == ("secrets.api_key", "input")
    assert (attrs["menshen.offset.start"], attrs["menshen.offset.end"]) == (10, 10 + len(key))
    assert dict(server.attributes or {})["http.response.status_code"] == 400
    assert key not in "".join(s.to_json() for s in traced.spans())


def test_traceparent_to_the_engine_is_the_client_span_and_a_client_trace_is_continued(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path
) -> None:
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with _running(tmp_path, fake_engine, traced) as gateway:
        assert _chat(gateway, "hello", stream=True).status_code == 200
        sent_fresh = fake_engine.last_request.headers["traceparent"]
        traced.wait_server_span(1)
        continued = _chat(gateway, "hello", headers={"traceparent": f"00-{client_trace}-{client_span}-01"})
        assert continued.status_code == 200
        sent_continued = fake_engine.last_request.headers["traceparent"]
        traced.wait_server_span(2)

    for sent in (sent_fresh, sent_continued):
        version, trace_id, parent_id, flags = sent.split("-")
        assert version == "00"
        assert int(flags, 16) & 1, "sampled"
        spans = traced.trace(trace_id)
        engine = spans[ENGINE_SPAN]
        assert _hex(engine.context.span_id, 16) == parent_id
        assert engine.kind == SpanKind.CLIENT
    _, trace_id, _, _ = sent_continued.split("-")
    assert trace_id == client_trace
    server = traced.trace(client_trace)[SERVER_SPAN]
    assert server.parent is not None
    assert _hex(server.parent.span_id, 16) == client_span
    assert sent_fresh.split("-")[1] != client_trace
    # Only W3C trace context goes upstream, never a client's baggage.
    assert "baggage" not in fake_engine.last_request.headers


def test_real_otlp_http_export_from_the_running_gateway(
    fake_engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with otlp_http_receiver() as (url, received):
        # As `gateway serve` reads them: the SDK and the exporter take the process environment.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "menshen-test")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")  # every request, not the default one in ten
        provider = setup_tracing(set_global=False)
        assert provider is not None
        with run_gateway(
            gateway_settings(tmp_path / "data", fake_engine.url), AppParts(telemetry=Telemetry(provider))
        ) as gateway:
            assert _chat(gateway, "hello", stream=True).status_code == 200
            sent = fake_engine.last_request.headers["traceparent"]
            _, trace_id, parent_id, _ = sent.split("-")
            # Batch export: flush until the server span (the last to end) has arrived.
            wait_for(
                lambda: (
                    provider.force_flush(5_000) and any(s.name == SERVER_SPAN for s in received.all_spans())
                ),
                within=10,
                interval=0.05,
            )
        provider.shutdown()
    spans = received.all_spans()
    names = {s.name for s in spans}
    assert {SERVER_SPAN, SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD, ENGINE_SPAN, SPAN_STREAM} <= names
    assert {s.trace_id.hex() for s in spans} == {trace_id}
    (engine,) = [s for s in spans if s.name == ENGINE_SPAN]
    assert engine.span_id.hex() == parent_id
    assert engine.kind == ProtoSpan.SPAN_KIND_CLIENT


# --- metrics -------------------------------------------------------------------------------------------


def test_metrics_counters_move_with_requests(fake_engine: FakeEngine, tmp_path: Path) -> None:
    answer = _prompt(fake_engine, "answer", Script.of(ANSWER))
    banned = _prompt(fake_engine, "banned", Script.of(f"so {BANNED} then"))
    with _running(tmp_path, fake_engine) as gateway:
        metrics_url = gateway.url + "/metrics"
        before = _scrape(metrics_url)
        usage = _chat(gateway, answer).json()["usage"]
        assert _chat(gateway, answer, stream=True).status_code == 200
        assert _sse_content(_chat(gateway, banned, stream=True))[1] == "content_filter"
        wait_for(
            lambda: _value(_scrape(metrics_url), "menshen_requests_total", client="anonymous") >= 3, within=5
        )
        after = _scrape(metrics_url)
        policy_version = gateway.state.policy.current.short_version

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/v1/chat/completions"
    assert moved("menshen_requests_total", route=route, status="200", client="anonymous") == 3
    assert moved("menshen_request_duration_seconds_count", route=route) == 3
    assert moved("menshen_time_to_first_token_seconds_count", route=route) == 3
    assert moved("menshen_tokens_total", type="input", client="anonymous") >= 2 * usage["prompt_tokens"]
    assert moved("menshen_tokens_total", type="output", client="anonymous") >= 2 * usage["completion_tokens"]
    hits = moved(
        "menshen_guardrail_hits_total", rule="words.violence", action="block", mode="enforce", where="output"
    )
    assert hits == 1
    assert _value(after, "menshen_policy_info", version=policy_version) == 1
    assert _value(after, "menshen_policy_reloads_total", result="success") >= 1


def test_metrics_count_429s_by_limit_and_auth_failures_by_reason(
    fake_engine: FakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _tiny_limit_bundle(tmp_path, "2/minute")
    with _running(tmp_path, fake_engine, policies=bundle, **_builtin(tmp_path)) as gateway:
        token = _issue_token(gateway, tmp_path, "svc-metrics", capsys)
        metrics_url = gateway.url + "/metrics"
        before = _scrape(metrics_url)
        bad = "not-a-token-" + secrets.token_hex(8)
        assert _chat(gateway, "hello", token=bad).status_code == 401
        assert _chat(gateway, "hello").status_code == 401  # no token at all
        statuses = [_chat(gateway, "hello", token=token).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        after = _scrape(metrics_url)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("menshen_rate_limited_total", limit="requests") == 1
    assert moved("menshen_requests_total", status="429", client="svc-metrics") == 1
    assert moved("menshen_requests_total", status="200", client="svc-metrics") == 2
    assert moved("menshen_auth_failures_total") == 2
    reasons = _labels(after, "menshen_auth_failures_total", "reason")
    assert "missing" in reasons
    assert len(reasons) == 2
    assert moved("menshen_requests_total", status="401") == 2
    assert bad not in str(after)
    assert token not in str(after)


def test_metrics_token_file_protects_the_scrape(fake_engine: FakeEngine, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "metrics-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    with _running(tmp_path, fake_engine, metrics_token_file=token_file) as gateway:
        url = gateway.url + "/metrics"
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        samples = _scrape(url, headers={"Authorization": f"Bearer {token}"})
        assert _value(samples, "menshen_policy_reloads_total", result="success") >= 1


def test_metrics_port_serves_metrics_on_its_own_port(fake_engine: FakeEngine, tmp_path: Path) -> None:
    port = free_port()
    with _running(tmp_path, fake_engine, metrics_port=port) as gateway:
        assert _chat(gateway, "hello").status_code == 200
        samples = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert httpx.get(gateway.url + "/metrics", timeout=10).status_code == 404
    assert _value(samples, "menshen_requests_total", status="200", client="anonymous") == 1


# --- scrubbing, audit, access log ----------------------------------------------------------------------


def test_no_token_prompt_or_output_reaches_logs_spans_or_audit(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt_marker = "pm" + secrets.token_hex(10)
    output_marker = "om" + secrets.token_hex(10)
    api_key = "sk-" + secrets.token_hex(16)
    bad_token = "bad" + secrets.token_hex(16)
    prompt = f"my password is hunter2-{prompt_marker}, client_secret={prompt_marker}"
    output = _prompt(fake_engine, "secretive", Script.of(f"the secret is {output_marker} ok"), prompt)
    blocked = _prompt(fake_engine, "blocked", Script.of(f"the {output_marker} is {BANNED} here"), prompt)
    bundle = _tiny_limit_bundle(tmp_path, "4/minute")
    with (
        _capture_logs() as logs,
        _running(tmp_path, fake_engine, traced, policies=bundle, **_builtin(tmp_path)) as gateway,
    ):
        token = _issue_token(gateway, tmp_path, "svc-scrub", capsys)
        streamed = _chat(gateway, output, token=token, stream=True)
        assert _sse_content(streamed)[0] == f"the secret is {output_marker} ok"
        assert _chat(gateway, output, token=token).status_code == 200
        assert _sse_content(_chat(gateway, blocked, token=token, stream=True))[1] == "content_filter"
        assert _chat(gateway, f"{prompt} {api_key}", token=token).status_code == 400
        assert _chat(gateway, prompt, token=token).status_code == 429
        assert _chat(gateway, prompt, token=bad_token).status_code == 401
        assert _chat(gateway, prompt, token=f"{token}x").status_code == 401
        traced.wait_server_span(8)  # the token request and seven chats
        audit = gateway.settings.audit_path.read_text(encoding="utf-8")

    log_text = logs.text()
    span_text = "".join(s.to_json() for s in traced.spans())
    # The captures saw the traffic: the access lines name the client, the spans and audit the decisions.
    assert '"client_id":"svc-scrub"' in logs.rendered.getvalue()
    assert "secrets.api_key" in span_text
    assert "secrets.api_key" in audit
    assert '"kind":"rate_limited"' in audit
    assert '"kind":"auth_failure"' in audit
    _header, payload, signature = token.split(".")
    needles = {
        "token": token,
        "token payload": payload,
        "token signature": signature,
        "bad token": bad_token,
        "prompt marker": prompt_marker,
        "prompt": "hunter2",
        "api key": api_key,
        "output marker": output_marker,
        "banned word": BANNED,
    }
    for where, text in (("logs", log_text), ("spans", span_text), ("audit", audit)):
        found = [name for name, needle in needles.items() if needle in text]
        assert not found, f"{where} hold the {found}"


def test_audit_records_decisions_429s_and_auth_failures_and_verifies(
    fake_engine: FakeEngine, traced: Traced, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = _prompt(fake_engine, "blocked", Script.of(f"so {BANNED} then"))
    bundle = _tiny_limit_bundle(tmp_path, "2/minute")
    with _running(tmp_path, fake_engine, traced, policies=bundle, **_builtin(tmp_path)) as gateway:
        token = _issue_token(gateway, tmp_path, "svc-audit", capsys)
        assert _sse_content(_chat(gateway, blocked, token=token, stream=True))[1] == "content_filter"
        assert _chat(gateway, "hello", token=token).status_code == 200
        assert _chat(gateway, "hello", token=token).status_code == 429
        assert _chat(gateway, "hello", token="garbage-token").status_code == 401
        traced.wait_server_span(5)
        records = _audit(gateway)
        path = gateway.settings.audit_path
        key_file = gateway.settings.data_dir / "audit.key"
        policy_version = gateway.state.policy.current.short_version
    key = bytes.fromhex(key_file.read_text().strip())
    server_traces = {_hex(s.context.trace_id) for s in traced.server_spans()}

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_kind.setdefault(record["kind"], []).append(record)
    (guardrail,) = by_kind["guardrail"]
    assert (guardrail["client"], guardrail["rule"], guardrail["action"], guardrail["mode"]) == (
        "svc-audit",
        "words.violence",
        "block",
        "enforce",
    )
    assert guardrail["policy_version"] == policy_version
    assert guardrail["content_hmac"] == content_hmac(key, BANNED)
    assert guardrail["trace_id"] in server_traces
    (limited,) = by_kind["rate_limited"]
    assert (limited["client"], limited["limit"]) == ("svc-audit", "requests")
    assert limited["trace_id"] in server_traces
    (failure,) = by_kind["auth_failure"]
    assert failure["reason"]
    assert "garbage-token" not in json.dumps(failure)
    assert [r["seq"] for r in records] == list(range(len(records)))

    assert cli_main(["audit", "verify", str(path)]) == 0
    assert cli_main(["audit", "verify", str(path), "--key-file", str(key_file)]) == 0
    assert "OK:" in capsys.readouterr().out

    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, r in enumerate(records) if r["kind"] == "guardrail")
    tampered = {
        "edited": [*lines[:index], lines[index].replace(b'"block"', b'"flag"'), *lines[index + 1 :]],
        "deleted": [*lines[:index], *lines[index + 1 :]],
        "reordered": [*lines[:index], lines[index + 1], lines[index], *lines[index + 2 :]],
    }
    for name, content in tampered.items():
        copy = tmp_path / f"audit-{name}.jsonl"
        copy.write_bytes(b"".join(content))
        assert cli_main(["audit", "verify", str(copy)]) == 1, name
        assert "FAILED" in capsys.readouterr().out


def test_one_access_log_line_per_request(fake_engine: FakeEngine, traced: Traced, tmp_path: Path) -> None:
    answer = _prompt(fake_engine, "answer", Script.of(ANSWER))
    with _capture_logs() as logs, _running(tmp_path, fake_engine, traced) as gateway:
        assert _chat(gateway, answer, stream=True).status_code == 200
        assert _chat(gateway, answer).status_code == 200
        assert _chat(gateway, f"my key is sk-{secrets.token_hex(12)}").status_code == 400
        assert _chat(gateway, "hi", model="no-such-model").status_code in (403, 404)
        # Answered outside the request flow: models, an unknown path, a wrong method; probes are not logged.
        assert httpx.get(gateway.api + "/models", timeout=5).status_code == 200
        assert httpx.get(gateway.url + "/no/such/path?token=abc", timeout=5).status_code == 404
        assert httpx.get(gateway.api + "/chat/completions", timeout=5).status_code == 405
        assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
        traced.wait_server_span(7)
        wait_for(lambda: len(logs.access()) >= 7, within=5)

    access = logs.access()
    assert len(access) == 7, access
    by_trace = {_hex(s.context.trace_id): s for s in traced.server_spans()}
    assert {line["trace_id"] for line in access} == set(by_trace)
    for line in access:
        server = by_trace[line["trace_id"]]
        assert line["status"] == dict(server.attributes or {})["http.response.status_code"]
        span_ms = ((server.end_time or 0) - (server.start_time or 0)) / 1e6
        assert 0 < line["duration_ms"] <= span_ms + 1 or line["path"] != "/v1/chat/completions"
        assert line["level"] == "info"
        assert line["time"].endswith("Z")
    chat = [line for line in access if line["path"] == "/v1/chat/completions" and line["method"] == "POST"]
    assert len(chat) == 4
    assert all(line["client_id"] == "anonymous" for line in chat)
    statuses = sorted(line["status"] for line in chat)
    assert statuses[:3] == [200, 200, 400]
    assert statuses[3] >= 400
    assert [line["finish_reason"] for line in chat if line["status"] == 200] == ["stop", "stop"]
    others = sorted((line["method"], line["path"], line["status"]) for line in access if line not in chat)
    assert others == [
        ("GET", "/no/such/path", 404),  # never the query string
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/v1/models", 200),
    ]
    assert next(line for line in access if line["path"] == "/v1/models")["client_id"] == "anonymous"


def test_serve_keeps_the_scrubbing_json_log_handler(fake_engine: FakeEngine, tmp_path: Path) -> None:
    """``gateway serve`` configures logging, then builds the app: the app must not replace the handler.

    Litestar's default ``logging_config`` installs its own root handler (plain text, no scrubber) when an
    app is created; ``create_app`` must pass ``logging_config=None``.
    """
    from gateway.serve import prepare

    with saved_logging():
        root = logging.getLogger()
        # An app built by another test may have left Litestar's handler behind: start without it.
        for handler in [h for h in root.handlers if h.get_name()]:
            root.removeHandler(handler)
        prepared = prepare(gateway_settings(tmp_path / "data", fake_engine.url))
        assert prepared is not None
        # pytest's own capture handlers are unnamed; Litestar's is "queue_listener".
        handlers = [h.get_name() for h in root.handlers if h.get_name()]
    assert handlers == ["menshen"]

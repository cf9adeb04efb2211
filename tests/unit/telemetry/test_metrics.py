from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import OTHER, LabelFold, Metrics, bearer_matches


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_move_and_render_parses() -> None:
    m = Metrics()
    before = _samples(m)
    key = (
        "menshen_requests_total",
        (("client", "team-a"), ("route", "/v1/chat/completions"), ("status", "200")),
    )
    assert key not in before
    for _ in range(3):
        m.observe_request(route="/v1/chat/completions", status=200, client="team-a", duration_s=0.4)
    m.observe_ttft(route="/v1/chat/completions", seconds=0.2)
    m.add_tokens(client="team-a", input_tokens=10, output_tokens=25)
    m.add_tokens(client="team-a", input_tokens=5)
    m.guardrail_hit(rule="words.secret", action="block", mode="shadow", where="output")
    m.loop_cut(where="reasoning")
    m.rate_limit_hit(limit="tokens")
    m.auth_failure(reason="expired")
    m.set_engine_up(True)
    m.engine_restart()
    m.policy_reload(ok=True, version="v7")
    m.policy_reload(ok=False)
    m.set_redis_fallback(True)
    m.audit_failure()
    after = _samples(m)
    assert after[key] == 3
    assert after[("menshen_request_duration_seconds_count", (("route", "/v1/chat/completions"),))] == 3
    assert after[
        ("menshen_request_duration_seconds_sum", (("route", "/v1/chat/completions"),))
    ] == pytest.approx(1.2)
    assert after[("menshen_time_to_first_token_seconds_count", (("route", "/v1/chat/completions"),))] == 1
    assert after[("menshen_tokens_total", (("client", "team-a"), ("type", "input")))] == 15
    assert after[("menshen_tokens_total", (("client", "team-a"), ("type", "output")))] == 25
    hit = (("action", "block"), ("mode", "shadow"), ("rule", "words.secret"), ("where", "output"))
    assert after[("menshen_guardrail_hits_total", hit)] == 1
    assert after[("menshen_loops_cut_total", (("where", "reasoning"),))] == 1
    assert after[("menshen_rate_limited_total", (("limit", "tokens"),))] == 1
    assert after[("menshen_auth_failures_total", (("reason", "expired"),))] == 1
    assert after[("menshen_engine_up", ())] == 1
    assert after[("menshen_engine_restarts_total", ())] == 1
    assert after[("menshen_policy_reloads_total", (("result", "success"),))] == 1
    assert after[("menshen_policy_reloads_total", (("result", "failure"),))] == 1
    assert after[("menshen_policy_info", (("version", "v7"),))] == 1
    assert after[("menshen_redis_fallback", ())] == 1
    assert after[("menshen_audit_failures_total", ())] == 1
    assert after[("menshen_audit_healthy", ())] == 0


def test_policy_info_shows_only_the_version_in_force() -> None:
    m = Metrics()
    m.policy_reload(ok=True, version="v1")
    m.policy_reload(ok=True, version="v2")
    versions = [labels for (name, labels) in _samples(m) if name == "menshen_policy_info"]
    assert versions == [(("version", "v2"),)]


def test_two_instances_do_not_share_series() -> None:
    a, b = Metrics(), Metrics()
    a.engine_restart()
    assert _samples(a)[("menshen_engine_restarts_total", ())] == 1
    assert _samples(b)[("menshen_engine_restarts_total", ())] == 0


def test_unknown_clients_fold_into_other_but_policy_clients_never_do() -> None:
    m = Metrics(max_clients=2)
    m.set_known_clients(["policy-client"])
    for i in range(50):
        m.observe_request(route="/v1/models", status=200, client=f"sub-{i}", duration_s=0.01)
    m.observe_request(route="/v1/models", status=200, client="policy-client", duration_s=0.01)
    clients = {dict(labels)["client"] for (name, labels) in _samples(m) if name == "menshen_requests_total"}
    assert clients == {"sub-0", "sub-1", OTHER, "policy-client"}
    assert (
        _samples(m)[
            ("menshen_requests_total", (("client", OTHER), ("route", "/v1/models"), ("status", "200")))
        ]
        == 48
    )


def test_label_fold_bounds_and_truncates() -> None:
    fold = LabelFold(1)
    assert fold(None) == "none"
    assert fold("x" * 500) == "x" * 64
    assert fold("y") == OTHER


def test_openmetrics_on_request() -> None:
    m = Metrics()
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_served_on_a_separate_port() -> None:
    m = Metrics()
    m.engine_restart()
    server = m.serve_metrics("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["menshen_engine_restarts"].samples[0].value == 1


def test_bearer_matches() -> None:
    assert bearer_matches("Bearer scrape-token-123", "scrape-token-123")
    assert bearer_matches("bearer   scrape-token-123 ", "scrape-token-123")
    assert not bearer_matches("Bearer scrape-token-124", "scrape-token-123")
    assert not bearer_matches("Basic scrape-token-123", "scrape-token-123")
    assert not bearer_matches(None, "scrape-token-123")
    assert not bearer_matches("Bearer ", "")

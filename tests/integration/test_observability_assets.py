"""The operators' Grafana dashboard and Prometheus alert rules (deploy/observability/) against the gateway.

One real gateway (built-in issuer, a bundle whose standard tier allows few requests) in front of the fake
engine serves a chat, a stream, a 401, a blocked prompt, a blocked answer, a loop, a 429 and a rejected
policy edit, so that the labelled series exist; its ``GET /metrics`` is then scraped once. Every metric a
dashboard query or an alert expression names must be among the scraped series, with the labels the query
filters or groups on. The PromQL is read loosely (identifiers, ``{...}`` matchers and ``by (...)``); the
rules' logic is checked by promtool's unit tests (``make obs-check``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main as cli_main
from tests.fakes.engine import FakeEngine
from tests.fakes.script import Piece, Script
from tests.support.gateway import DEFAULT_POLICIES, REPO, gateway_settings, run_gateway, wait_for

ASSETS = REPO / "deploy" / "observability"
DASHBOARD = ASSETS / "grafana-dashboard.json"
RULES = ASSETS / "alerts.yaml"
OPERATOR_RULES = ASSETS / "prometheusrule.yaml"
RUNBOOK = REPO / "docs" / "operations" / "runbook.md"
OBSERVABILITY_DOC = REPO / "docs" / "operations" / "observability.md"

MODEL = "qwen3-8b"
CLIENT = "svc-observability"
BANNED = "禁词示例"  # policies/default/lists/violence.txt, rule words.violence (block)
REQUESTS_PER_MINUTE = 8

METRIC = re.compile(r"\bmenshen_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(menshen_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")
# Added by Prometheus when it scrapes (and by Kubernetes service discovery), never by the gateway.
TARGET_LABELS = frozenset({"job", "instance", "namespace"})
SEVERITIES = frozenset({"critical", "warning"})


@dataclass
class Scrape:
    """What one ``GET /metrics`` showed: label names and values seen per family (only families with samples)."""

    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def family(self, name: str) -> str | None:
        """The family a series name belongs to (``x_total``, ``x_bucket`` ... name the family ``x``)."""
        if name in self.labels:
            return name
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in self.labels:
                return name.removesuffix(suffix)
        return None


# --- the running gateway, driven once for the module ---------------------------------------------------


def _bundle(root: Path) -> Path:
    """policies/default with the standard tier (clients known by their scopes) limited to a few requests."""
    target = root / "bundle"
    shutil.copytree(DEFAULT_POLICIES, target)
    limits = target / "limits.yaml"
    data = yaml.safe_load(limits.read_text(encoding="utf-8"))
    data["tiers"]["standard"]["requests"] = f"{REQUESTS_PER_MINUTE}/minute"
    limits.write_text(yaml.safe_dump(data), encoding="utf-8")
    return target


def _issue_token(base_url: str, secrets_dir: Path) -> str:
    """``gateway client add`` (its secret read from stdout) then the client-credentials grant."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["client", "add", CLIENT, "--scope", "llm.chat", "--data-dir", str(secrets_dir)]) == 0
    secret = next(
        line.split(":", 1)[1].strip()
        for line in out.getvalue().splitlines()
        if line.startswith("client_secret:")
    )
    response = httpx.post(
        base_url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT, secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _ask(sdk: openai.OpenAI, engine: FakeEngine, name: str, script: Script, *, stream: bool) -> str | None:
    """A chat whose answer the fake engine takes from ``script``; the finish reason."""
    engine.scripts[name] = script
    messages: Any = [{"role": "user", "content": f"[[script:{name}]] go on"}]
    if not stream:
        return sdk.chat.completions.create(model=MODEL, messages=messages).choices[0].finish_reason
    finish = None
    for chunk in sdk.chat.completions.create(model=MODEL, messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].finish_reason is not None:
            finish = chunk.choices[0].finish_reason
    return finish


def _served_until_rate_limited(sdk: openai.OpenAI, engine: FakeEngine) -> int:
    """Chats until one is refused with 429; how many were answered before it."""
    for served in range(REQUESTS_PER_MINUTE + 1):
        try:
            _ask(sdk, engine, "answer", Script.of("Paris is the capital."), stream=False)
        except openai.RateLimitError:
            return served
    raise AssertionError("no 429 within the tier's limit")


def _scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    scrape = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = scrape.labels.setdefault(family.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return scrape


def _seen(scrape: Scrape, family: str, **labels: str) -> bool:
    seen = scrape.labels.get(family, {})
    return all(value in seen.get(name, set()) for name, value in labels.items())


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    root = tmp_path_factory.mktemp("observability")
    data_dir = root / "data"
    bundle = _bundle(root)
    with FakeEngine(models=(MODEL,)) as engine:
        settings = gateway_settings(
            data_dir,
            engine.url,
            policies=bundle,
            auth="builtin",
            auth_key_file=root / "issuer-keys.json",
            auth_secrets_file=root / "client-secrets.yaml",
        )
        with run_gateway(settings) as gateway:
            token = _issue_token(gateway.url, root)  # where --auth-secrets-file lives
            with openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=20) as sdk:
                assert _ask(sdk, engine, "answer", Script.of("Paris is the capital."), stream=False) == "stop"
                assert _ask(sdk, engine, "stream", Script.of("Paris, again."), stream=True) == "stop"
                banned = Script.of(f"so {BANNED} then")
                assert _ask(sdk, engine, "banned", banned, stream=True) == "content_filter"
                loop = Script(pieces=tuple(Piece(ch) for ch in "哈" * 500), rate=400)
                assert _ask(sdk, engine, "loop", loop, stream=True) == "length"
                with pytest.raises(openai.BadRequestError):
                    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": BANNED}])
                assert _served_until_rate_limited(sdk, engine) < REQUESTS_PER_MINUTE
            with (
                openai.OpenAI(base_url=gateway.api, api_key="not-a-token", max_retries=0, timeout=20) as bad,
                pytest.raises(openai.AuthenticationError),
            ):
                bad.models.list()
            # A broken edit of the policy: the watcher rejects it and keeps the last good bundle.
            (bundle / "guardrails.yaml").write_text("rules: [\n", encoding="utf-8")
            metrics_url = gateway.url + "/metrics"
            wait_for(
                lambda: (
                    _seen(_scrape(metrics_url), "menshen_policy_reloads", result="failure")
                    and _seen(_scrape(metrics_url), "menshen_ratelimit_undo", result="failed")
                    and _seen(_scrape(metrics_url), "menshen_loops_cut", where="output")
                    and _seen(_scrape(metrics_url), "menshen_rate_limited")
                ),
                within=15,
                interval=0.2,
            )
            return _scrape(metrics_url)


# --- reading the assets --------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """Anchor -> text of each ``##`` entry of the runbook."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            anchor = _slug(line[3:])
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


QUERIES = {"dashboard": _dashboard_queries, "alerts": lambda: [rule["expr"] for rule in _rules()]}


# --- metrics named by the assets exist -----------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(QUERIES))
def test_every_metric_named_is_exported_with_samples(scrape: Scrape, source: str) -> None:
    named = {name for query in QUERIES[source]() for name in METRIC.findall(query)}
    assert len(named) >= 8, named
    missing = sorted(name for name in named if scrape.family(name) is None)
    assert not missing, f"{source} names metrics /metrics does not show: {missing}"


@pytest.mark.parametrize("source", sorted(QUERIES))
def test_every_label_filtered_or_grouped_on_exists(scrape: Scrape, source: str) -> None:
    problems: list[str] = []
    for query in QUERIES[source]():
        in_query: set[str] = set(TARGET_LABELS)
        for name, matchers in SELECTOR.findall(query):
            family = scrape.family(name)
            if family is None:
                continue  # reported by test_every_metric_named_is_exported_with_samples
            labels = scrape.labels[family]
            in_query |= labels.keys()
            for label, op, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"{name} has no label {label}: {query}")
                elif op == "=" and value not in labels[label]:
                    problems.append(f"{name}{{{label}={value!r}}} never seen (seen: {sorted(labels[label])})")
        for name in METRIC.findall(query):
            family = scrape.family(name)
            if family is not None:
                in_query |= scrape.labels[family].keys()
        for grouping in GROUPING.findall(query):
            for label in (part.strip() for part in grouping.split(",")):
                if label and label not in in_query:
                    problems.append(f"grouping on {label}, a label of no metric in: {query}")
    assert not problems, "\n".join(problems)


def test_the_scrape_saw_what_the_traffic_did(scrape: Scrape) -> None:
    """The series the queries were checked against are the ones the driven requests must have made."""
    assert _seen(scrape, "menshen_requests", status="200", client=CLIENT)
    assert _seen(scrape, "menshen_requests", status="429", client=CLIENT)
    assert _seen(scrape, "menshen_requests", status="401")
    assert _seen(scrape, "menshen_requests", status="400", client=CLIENT)
    assert _seen(scrape, "menshen_guardrail_hits", action="block", mode="enforce", where="input")
    assert _seen(scrape, "menshen_guardrail_hits", action="block", mode="enforce", where="output")
    assert _seen(scrape, "menshen_time_to_first_token_seconds", route="/v1/chat/completions")
    assert _seen(scrape, "menshen_policy_reloads", result="success")


# --- the dashboard's structure -------------------------------------------------------------------------


def test_dashboard_is_importable_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["title"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["title"]
        assert panel["datasource"] == datasource, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for t in targets:
            assert t["expr"].strip(), panel["title"]
            assert t["datasource"] == datasource, panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0, panel["title"]


# --- the rules' structure, and the runbook entry of each alert -----------------------------------------


def test_every_rule_is_complete_and_points_to_its_own_runbook_entry() -> None:
    rules = _rules()
    sections = _runbook_sections()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    assert len(rules) >= 9
    for rule in rules:
        name = rule["alert"]
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (REPO / path).resolve() == RUNBOOK.resolve(), name
        assert anchor in sections, f"{name}: no runbook entry #{anchor}"
        assert f"`{name}`" in sections[anchor], f"{name}: its runbook entry does not name it"
        for part in ("**Symptom:**", "**Clients see:**", "**Operator sees:**", "**Do:**"):
            assert part in sections[anchor], f"{name}: runbook entry #{anchor} lacks {part}"


def test_each_runbook_entry_serves_one_alert_at_most() -> None:
    anchors = [rule["annotations"]["runbook_url"].partition("#")[2] for rule in _rules()]
    assert len(anchors) == len(set(anchors))


def test_the_operator_copy_has_the_same_groups() -> None:
    operator = yaml.safe_load(OPERATOR_RULES.read_text(encoding="utf-8"))
    assert operator["apiVersion"] == "monitoring.coreos.com/v1"
    assert operator["kind"] == "PrometheusRule"
    assert operator["metadata"]["name"]
    assert operator["spec"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))


def test_a_rule_without_its_runbook_anchor_is_caught() -> None:
    """The anchor check is not vacuous: a heading's anchor is what GitHub makes of it."""
    assert _slug("The JWKS (or introspection) endpoint is unreachable") == (
        "the-jwks-or-introspection-endpoint-is-unreachable"
    )
    assert _slug("Many 5xx answers") == "many-5xx-answers"
    assert "no-such-entry" not in _runbook_sections()


def test_the_observability_page_lists_every_alert_with_a_live_runbook_link() -> None:
    page = OBSERVABILITY_DOC.read_text(encoding="utf-8")
    sections = _runbook_sections()
    for rule in _rules():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert f"[`{rule['alert']}`](runbook.md#{anchor})" in page, rule["alert"]
    for anchor in re.findall(r"\]\(runbook\.md#([^)]+)\)", page):
        assert anchor in sections, anchor

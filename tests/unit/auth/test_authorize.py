"""Authorisation from the policy's clients section: by client id, by scope, fail closed."""

from __future__ import annotations

import pytest

from gateway.auth.authorize import authorize, grant_for
from gateway.auth.errors import Forbidden
from gateway.auth.principal import Principal, anonymous_principal
from gateway.policy.sections import ClientPolicy, ClientsSection, ScopeGrant


def principal(client_id: str = "idp-app", *scopes: str) -> Principal:
    return Principal(client_id, frozenset(scopes), client_id, "https://idp.example", "h")


@pytest.fixture
def clients() -> ClientsSection:
    return ClientsSection(
        clients={
            "billing": ClientPolicy(tier="gold", models=["qwen3-*"], endpoints=["chat", "models"]),
            "batch": ClientPolicy(tier="bronze", models=["qwen3-8b"], endpoints=["completions"]),
        },
        scopes={
            "llm.small": ScopeGrant(tier="bronze", models=["smollm2-*"], endpoints=["chat"]),
            "llm.large": ScopeGrant(tier="gold", models=["qwen3-8b"], endpoints=["chat", "models"]),
            "llm.any": ScopeGrant(models=["*"]),
        },
    )


def test_listed_client_uses_its_entry(clients: ClientsSection) -> None:
    grant = authorize(principal("billing"), clients, "qwen3-8b", "chat")
    assert grant.tier == "gold"
    assert grant.policy is clients.clients["billing"]


def test_listed_client_forbidden_model(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden) as info:
        authorize(principal("billing"), clients, "smollm2-135m", "chat")
    assert 'error="insufficient_scope"' in info.value.www_authenticate


def test_listed_client_forbidden_endpoint(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden, match="completions"):
        authorize(principal("billing"), clients, "qwen3-8b", "completions")


def test_listed_client_ignores_token_scopes(clients: ClientsSection) -> None:
    # Scopes in the token cannot widen what the policy gives a listed client.
    with pytest.raises(Forbidden):
        authorize(principal("batch", "llm.any", "llm.large"), clients, "smollm2-135m", "completions")


def test_scope_allows_its_models(clients: ClientsSection) -> None:
    grant = authorize(principal("idp-app", "llm.small"), clients, "smollm2-135m", "chat")
    assert grant.tier == "bronze"
    assert grant.policy is None


def test_scope_forbids_other_models(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden, match="model"):
        authorize(principal("idp-app", "llm.small"), clients, "qwen3-8b", "chat")


def test_scopes_union_models_and_endpoints_and_take_first_tier_by_name(clients: ClientsSection) -> None:
    grant = grant_for(principal("idp-app", "llm.small", "llm.large"), clients)
    assert grant.allows_model("qwen3-8b")
    assert grant.allows_model("smollm2-135m")
    assert grant.endpoints == {"chat", "models"}
    assert grant.tier == "gold"  # llm.large sorts before llm.small


def test_scope_without_tier_and_no_default_tier_is_forbidden(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden, match="not granted"):
        authorize(principal("idp-app", "llm.any"), clients, "qwen3-8b", "chat")


def test_scope_without_tier_uses_default_tier(clients: ClientsSection) -> None:
    with_default = clients.model_copy(update={"default_tier": "free"})
    assert authorize(principal("idp-app", "llm.any"), with_default, "qwen3-8b", "chat").tier == "free"


def test_unknown_client_without_scopes_is_forbidden_everywhere(clients: ClientsSection) -> None:
    with_default = clients.model_copy(update={"default_tier": "free"})
    with pytest.raises(Forbidden):
        authorize(principal("idp-app", "unrelated"), with_default, None, "models")


def test_model_globs_are_case_sensitive(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden):
        authorize(principal("billing"), clients, "QWEN3-8B", "chat")


def test_models_endpoint_without_model(clients: ClientsSection) -> None:
    assert authorize(principal("billing"), clients, None, "models").tier == "gold"


def test_anonymous_needs_a_default_tier_or_an_entry(clients: ClientsSection) -> None:
    with pytest.raises(Forbidden, match="Anonymous"):
        authorize(anonymous_principal(), clients, "qwen3-8b", "chat")
    with_default = clients.model_copy(update={"default_tier": "dev"})
    assert authorize(anonymous_principal(), with_default, "anything", "completions").tier == "dev"


# --- tools --------------------------------------------------------------------------------------------------


def test_tool_grants_of_a_listed_client() -> None:
    section = ClientsSection(
        clients={
            "hr": ClientPolicy(tier="t", tools=["hr_*", "calendar_*"]),
            "plain": ClientPolicy(tier="t", tools=False),
            "open": ClientPolicy(tier="t"),
        }
    )
    hr = grant_for(principal("hr"), section)
    assert hr.allows_tool("hr_lookup") and hr.allows_tool("calendar_add")
    assert not hr.allows_tool("shell_exec") and not hr.allows_tool("HR_lookup")
    assert not grant_for(principal("plain"), section).allows_tool("hr_lookup")
    assert grant_for(principal("open"), section).allows_tool("anything")


def test_scope_tool_grants_add_up() -> None:
    section = ClientsSection(
        scopes={
            "a": ScopeGrant(tier="t", tools=["hr_*"]),
            "b": ScopeGrant(tools=["calendar_*"]),
            "none": ScopeGrant(tools=False),
            "all": ScopeGrant(),
        }
    )
    both = grant_for(principal("idp", "a", "b", "none"), section)
    assert both.allows_tool("hr_x") and both.allows_tool("calendar_y") and not both.allows_tool("mail_z")
    assert not grant_for(principal("idp", "a", "none"), section).allows_tool("calendar_y")
    assert grant_for(principal("idp", "a", "all"), section).allows_tool("mail_z")
    assert not grant_for(
        principal("idp", "none"), ClientsSection(default_tier="t", scopes=section.scopes)
    ).tools


def test_tool_globs_are_validated() -> None:
    with pytest.raises(ValueError, match="tools"):
        ClientPolicy.model_validate({"tier": "t", "tools": ["hr tools"]})

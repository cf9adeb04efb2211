"""Authorisation: what an authenticated principal may do, from the policy's clients section.

A client listed by id uses its entry. Otherwise the token's scopes select ``ClientsSection.scopes``
grants: allowed models and endpoints are the union; the tier comes from the granting scopes (the
first in name order that names one) or ``default_tier``. No tier means no access (fail closed).
The ``--auth none`` principal, when not listed, gets ``default_tier`` with every model.
Tools follow the same rule: a listed client's ``tools``, else the union of its scopes' grants (``true``
anywhere grants every tool; ``false`` everywhere grants none).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from gateway.auth.errors import Forbidden
from gateway.auth.principal import Principal
from gateway.policy.sections import ALL_ENDPOINTS, ClientPolicy, ClientsSection, EndpointName, ToolAccess

ANY_TOOL: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class Grant:
    """What the principal may use: its limits tier, model globs, endpoints, its policy entry and tool-name globs
    (empty: no tools)."""

    tier: str
    models: tuple[str, ...]
    endpoints: frozenset[EndpointName]
    policy: ClientPolicy | None
    tools: tuple[str, ...] = ANY_TOOL

    def allows_model(self, model: str) -> bool:
        # Case-sensitive: model ids are exact names, and a glob must not widen by case folding.
        return any(fnmatchcase(model, pattern) for pattern in self.models)

    def allows_tool(self, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.tools)


def tool_globs(access: ToolAccess) -> tuple[str, ...]:
    """A policy's ``tools`` value as globs: true is every tool, false none."""
    if isinstance(access, bool):
        return ANY_TOOL if access else ()
    return tuple(access)


def grant_for(principal: Principal, clients: ClientsSection) -> Grant:
    """The principal's Grant regardless of endpoint and model; Forbidden when it has no tier."""
    entry = clients.clients.get(principal.client_id)
    if entry is not None:
        return Grant(
            entry.tier, tuple(entry.models), frozenset(entry.endpoints), entry, tool_globs(entry.tools)
        )
    if principal.is_anonymous:
        if clients.default_tier is None:
            raise Forbidden("Anonymous access needs an 'anonymous' client or a default tier in the policy.")
        return Grant(clients.default_tier, ("*",), frozenset(ALL_ENDPOINTS), None)
    models: list[str] = []
    endpoints: set[EndpointName] = set()
    tools: list[str] = []
    tier: str | None = None
    for name in sorted(principal.scopes & clients.scopes.keys()):
        scope_grant = clients.scopes[name]
        models.extend(m for m in scope_grant.models if m not in models)
        endpoints.update(scope_grant.endpoints)
        tools.extend(t for t in tool_globs(scope_grant.tools) if t not in tools)
        if tier is None:
            tier = scope_grant.tier
    tier = tier or clients.default_tier
    if tier is None:
        raise Forbidden("This client is not granted access by the policy.")
    return Grant(tier, tuple(models), frozenset(endpoints), None, ANY_TOOL if "*" in tools else tuple(tools))


def authorize(
    principal: Principal, clients: ClientsSection, model: str | None, endpoint: EndpointName
) -> Grant:
    """The Grant for this call, or Forbidden (403 insufficient_scope) naming what is not allowed."""
    grant = grant_for(principal, clients)
    if endpoint not in grant.endpoints:
        raise Forbidden(f"This client may not use the {endpoint} endpoint.")
    if model is not None and not grant.allows_model(model):
        raise Forbidden("This client may not use the requested model.")
    return grant

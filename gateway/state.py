"""The gateway's collaborators, built once from the settings and handed to routes by dependency injection.

``build_state`` only builds and validates: the policy store (with the guardrails compiler passed in), the
audit trail and metrics, authentication and the built-in issuer, the rate limiter, the set of upstream engines
(one client each), and the request flows (``relay/``) over them. Nothing here runs per request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from litestar.plugins import PluginProtocol

from engine.client import EngineClient, EngineClientConfig
from gateway.auth import Authenticator, BuiltinIssuer
from gateway.guardrails import CompiledGuardrails, Normalizer, compile_guardrails
from gateway.guardrails.guards import EngineRef, GuardRegistry
from gateway.policy.sections import PolicyBundle
from gateway.policy.store import PolicyStore
from gateway.protocol import UpModelCard
from gateway.ratelimit import RateLimiter
from gateway.relay.admission import Admitter
from gateway.relay.embeddings import EmbeddingsService
from gateway.relay.service import RelayService
from gateway.relay.upstreams import Upstream, UpstreamSet
from gateway.settings import Settings, read_secret_file
from gateway.telemetry.audit import AuditLog, load_or_create_key
from gateway.telemetry.audit_gate import AuditGate
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.spans import Telemetry
from gateway.telemetry.tracing import setup_tracing


@dataclass(slots=True)
class AppParts:
    """Optional parts supplied by the caller (``gateway up``, tests) instead of built from settings."""

    telemetry: Telemetry | None = None
    supervisor: Any = None
    engine_api_key: str | None = None
    supervisors: tuple[Any, ...] = ()
    """Every engine of ``gateway up`` (chat, embeddings, ...): each has ``role``, ``served_model_name``,
    ``base_url``, ``api_key``, ``up``, ``status()``, ``restarts`` and ``wait_ready()``."""
    extra_plugins: list[PluginProtocol] = field(default_factory=list)


class GatewayState:
    """Plain class, not a dataclass: Litestar would otherwise re-validate it on every injection."""

    __slots__ = (
        "admitter",
        "audit",
        "audit_gate",
        "authenticator",
        "embeddings",
        "extra_ready_checks",
        "guards",
        "http",
        "issuer",
        "limiter",
        "policy",
        "recorder",
        "relay",
        "settings",
        "telemetry",
        "upstreams",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        telemetry: Telemetry,
        upstreams: UpstreamSet,
        policy: PolicyStore,
        authenticator: Authenticator,
        issuer: BuiltinIssuer | None,
        limiter: RateLimiter,
        recorder: Recorder,
        audit: AuditLog,
        http: httpx.AsyncClient,
        guards: GuardRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.upstreams = upstreams
        self.policy = policy
        self.authenticator = authenticator
        self.issuer = issuer
        self.limiter = limiter
        self.recorder = recorder
        self.audit = audit
        self.http = http
        self.audit_gate = AuditGate(audit, policy)
        self.admitter = Admitter(
            authenticator=authenticator,
            policy=policy,
            limiter=limiter,
            max_body_bytes=settings.server.max_body_bytes,
            gate=self.audit_gate.check,
        )
        self.guards = guards or GuardRegistry()
        self.relay = RelayService(self.admitter, upstreams, recorder, self.guards)
        self.embeddings = EmbeddingsService(self.admitter, upstreams, recorder)
        self.extra_ready_checks: list[Callable[[], str | None]] = [self.audit_gate.problem]


def build_state(settings: Settings, parts: AppParts) -> GatewayState:
    """Every collaborator, validated; raises on an invalid policy bundle."""
    telemetry = parts.telemetry or Telemetry(setup_tracing(set_global=False))
    metrics = Metrics()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit = AuditLog(
        settings.audit_path,
        load_or_create_key(settings.audit_key_path),
        max_bytes=settings.telemetry.audit_max_bytes,
        on_failure=lambda _exc: metrics.audit_failure(),
    )

    def on_reload(ok: bool, version: str, errors: object) -> None:
        metrics.policy_reload(ok=ok, version=version[:12])
        audit.record("policy_reload", result="success" if ok else "failure", policy_version=version[:12])

    guards = GuardRegistry(guard_engines(parts), metrics.guard_call)
    compile_text = functools.partial(compile_guardrails, normalizer=Normalizer())

    def compiler(bundle: PolicyBundle) -> CompiledGuardrails:
        guards.prepare(bundle)  # a guard rule that cannot be set up fails the load like a bad pattern
        return compile_text(bundle)

    policy = PolicyStore.open(settings.policies, compiler=compiler, hooks=[on_reload])
    metrics.policy_reload(ok=True, version=policy.current.short_version)
    metrics.set_known_clients(policy.current.bundle.clients.clients.keys())

    auth = settings.auth
    http = httpx.AsyncClient(timeout=auth.fetch_timeout_s, trust_env=False, follow_redirects=False)
    issuer = (
        BuiltinIssuer(auth, clients_policy=lambda: policy.current.bundle.clients)
        if "builtin" in auth.modes
        else None
    )
    return GatewayState(
        settings=settings,
        telemetry=telemetry,
        upstreams=build_upstreams(settings, parts),
        policy=policy,
        authenticator=Authenticator.from_config(auth, http),
        issuer=issuer,
        limiter=RateLimiter(settings.ratelimit),
        recorder=Recorder(metrics, audit),
        audit=audit,
        http=http,
        guards=guards,
    )


def guard_engines(parts: AppParts) -> dict[str, EngineRef]:
    """The profile's engines a classifier rule may name by role (``engine: {role: guard}``)."""
    return {
        s.role: EngineRef(s.base_url.rstrip("/") + "/v1", s.api_key)
        for s in parts.supervisors
        if getattr(s, "role", None) == "guard"
    }


def build_upstreams(settings: Settings, parts: AppParts) -> UpstreamSet:
    """One upstream per supervised engine when given (each with its own key), else one per ``--upstream``
    (all with the one ``--upstream-api-key-file`` key)."""
    engine = settings.engine

    def client(base_url: str, api_key: str | None) -> EngineClient:
        return EngineClient(
            EngineClientConfig(
                base_url=base_url,
                api_key=api_key,
                connect_timeout_s=engine.connect_timeout,
                first_token_timeout_s=engine.first_token_timeout,
                idle_timeout_s=engine.idle_timeout,
            )
        )

    def supervised(supervisor: Any) -> Upstream:
        # Its model is known before the engine answers, so requests route to it while it starts.
        card = UpModelCard(id=supervisor.served_model_name)
        return Upstream(client(supervisor.base_url, supervisor.api_key), (card,), supervisor=supervisor)

    if parts.supervisors:
        return UpstreamSet([supervised(s) for s in parts.supervisors])
    key = parts.engine_api_key or read_secret_file(engine.upstream_api_key_file)
    upstreams = [Upstream(client(url, key)) for url in engine.upstream]
    if parts.supervisor is not None:
        upstreams[0] = supervised(parts.supervisor)
        upstreams[0].client = client(engine.upstream[0], key)
    return UpstreamSet(upstreams)


__all__ = ["AppParts", "GatewayState", "build_state", "build_upstreams"]

"""The gateway's collaborators, built once by the app factory and handed to routes by dependency injection.

``GatewayState.admit`` runs the steps every completion request shares before the engine is called:
authenticate, decode, authorise the model, reserve limits. It returns a ``RequestContext`` that owns the
reservation until ``settle`` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httpx
import msgspec
from litestar import Request

from engine.client import EngineClient
from gateway.auth import Authenticator, AuthError, Forbidden, Grant, Principal, authorize
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    PermissionDenied,
    RateLimitExceeded,
    ServiceUnavailable,
    Unauthenticated,
)
from gateway.guardrails import CompiledGuardrails, loop_check_for, repetition_detection_params
from gateway.guardrails.loop_check import engine_repetition_stop
from gateway.guardrails.pipeline import Decision, Stop, StreamCheck
from gateway.policy.sections import Endpoint, TierLimits
from gateway.policy.store import PolicySnapshot, PolicyStore
from gateway.protocol import AnyRequest, decode_request
from gateway.ratelimit import Admission, LimiterUnavailable, RateLimited, RateLimiter
from gateway.relay.errors import decode_error
from gateway.relay.record import RequestRecord
from gateway.relay.upstream import UpstreamCall, build_upstream_call
from gateway.telemetry.spans import SPAN_ADMISSION, SPAN_AUTH, phase

if TYPE_CHECKING:
    from engine.supervisor import EngineSupervisor
    from gateway.settings import Settings
    from gateway.telemetry.recorder import Recorder


@dataclass(slots=True)
class RequestContext:
    principal: Principal
    grant: Grant
    snapshot: PolicySnapshot
    request: AnyRequest
    call: UpstreamCall
    admission: Admission
    repetition: dict[str, int] | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def client_id(self) -> str:
        return self.principal.client_id

    @property
    def guardrails(self) -> CompiledGuardrails:
        return cast(CompiledGuardrails, self.snapshot.guardrails)

    def stream_checks(self) -> list[StreamCheck]:
        checks: list[StreamCheck] = [self.guardrails.stream_check(self.client_id)]
        loop = loop_check_for(self.snapshot.bundle, self.client_id)
        if loop is not None:
            checks.append(loop)
        return checks

    def engine_repetition(self) -> tuple[Stop, Decision] | None:
        """How vLLM's ``repetition`` finish is reported, when the policy sends the engine backstop."""
        if self.repetition is None:
            return None
        loops = self.snapshot.bundle.loops
        decision = Decision(
            loops.rule_id, "loop", "block", "enforce", "output", 0, 0, detail=(("source", "engine"),)
        )
        return engine_repetition_stop(loops), decision

    async def settle(self, used_tokens: int) -> None:
        await self.admission.settle(used_tokens)


class GatewayState:
    """Plain class, not a dataclass: Litestar would otherwise re-validate it on every injection."""

    __slots__ = (
        "authenticator",
        "engine",
        "extra_ready_checks",
        "http",
        "limiter",
        "policy",
        "recorder",
        "settings",
        "supervisor",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        engine: EngineClient,
        policy: PolicyStore,
        authenticator: Authenticator,
        limiter: RateLimiter,
        recorder: Recorder,
        http: httpx.AsyncClient | None = None,
        supervisor: EngineSupervisor | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.policy = policy
        self.authenticator = authenticator
        self.limiter = limiter
        self.recorder = recorder
        self.http = http
        self.supervisor = supervisor
        self.extra_ready_checks: list[Callable[[], str | None]] = []

    async def authenticate(self, request: Request[Any, Any, Any], record: RequestRecord) -> Principal:
        with phase(SPAN_AUTH):
            try:
                principal = await self.authenticator.authenticate(request.headers.get("authorization"))
            except AuthError as exc:
                record.auth_failure = exc.reason
                if exc.status == 503:
                    raise ServiceUnavailable(exc.description, code="auth_unavailable") from None
                raise Unauthenticated(
                    exc.description, headers={"www-authenticate": exc.www_authenticate}
                ) from None
        record.client_id = principal.client_id
        return principal

    def authorise(
        self, principal: Principal, snapshot: PolicySnapshot, model: str | None, endpoint: Endpoint
    ) -> Grant:
        try:
            return authorize(principal, snapshot.bundle.clients, model, endpoint)
        except Forbidden as exc:
            raise PermissionDenied(
                exc.description, headers={"www-authenticate": exc.www_authenticate}
            ) from None

    async def admit(
        self,
        request: Request[Any, Any, Any],
        record: RequestRecord,
        endpoint: Endpoint,
        kind: type[AnyRequest],
    ) -> RequestContext:
        principal = await self.authenticate(request, record)
        snapshot = self.policy.current
        record.policy_version = snapshot.short_version
        body = await _read_body(request, self.settings.server.max_body_bytes)
        try:
            parsed = decode_request(body, kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise decode_error(exc) from None
        record.model = parsed.model
        record.stream = parsed.stream
        grant = self.authorise(principal, snapshot, parsed.model, endpoint)
        bundle = snapshot.bundle
        repetition = repetition_detection_params(bundle.loops)
        call = build_upstream_call(parsed, bundle.generation, bundle.loops, repetition)
        record.max_tokens = call.max_tokens
        record.temperature = call.temperature
        limits = effective_limits(snapshot, grant)
        with phase(SPAN_ADMISSION) as span:
            span.set_attribute("menshen.reserve_tokens", call.prompt_estimate + call.max_tokens)
            try:
                admission = await self.limiter.admit(
                    principal.client_id,
                    limits,
                    call.prompt_estimate + call.max_tokens,
                    bundle.limits.on_redis_error,
                )
            except RateLimited as exc:
                record.limit_hit = exc.limit
                raise RateLimitExceeded(
                    exc.message,
                    param=exc.limit,
                    headers={**exc.headers, "retry-after": str(exc.retry_after_s)},
                ) from None
            except LimiterUnavailable as exc:
                raise ServiceUnavailable(exc.message, code="ratelimit_unavailable") from None
        return RequestContext(
            principal, grant, snapshot, parsed, call, admission, repetition, headers=dict(admission.headers)
        )


def effective_limits(snapshot: PolicySnapshot, grant: Grant) -> TierLimits:
    """The tier's limits with the client's own overrides on top."""
    tier = snapshot.bundle.limits.tiers.get(grant.tier, TierLimits())
    client = grant.policy
    if client is None or client.limits is None:
        return tier
    override = client.limits.model_dump(exclude_none=True)
    return tier.model_copy(update=override)


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["GatewayError", "GatewayState", "RequestContext", "effective_limits"]

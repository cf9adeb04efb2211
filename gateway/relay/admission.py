"""Admission, steps 2 to 4 of a request: authenticate → read and decode → authorise → reserve limits.

``Admitter.admit`` returns an ``AdmittedRequest`` that owns the rate-limit reservation until ``settle``.
Each step raises a ``GatewayError`` (401, 400/413, 403, 429/503) and writes what it learnt into the
request's ``RequestRecord``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
from litestar import Request

from gateway.auth import Authenticator, AuthError, Forbidden, Grant, Principal, authorize
from gateway.errors import (
    BodyTooLarge,
    PermissionDenied,
    RateLimitExceeded,
    ServiceUnavailable,
    Unauthenticated,
)
from gateway.guardrails import loop_check_for, repetition_detection_params
from gateway.guardrails.loop_check import engine_repetition_stop
from gateway.guardrails.pipeline import Decision, Stop, StreamCheck
from gateway.policy.sections import EndpointName, TierLimits
from gateway.policy.store import PolicySnapshot, PolicyStore
from gateway.protocol import (
    AnyRequest,
    ChatCompletionRequest,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
)
from gateway.ratelimit import Admission, LimiterUnavailable, RateLimited, RateLimiter
from gateway.relay.endpoints import Endpoint
from gateway.relay.errors import decode_error
from gateway.relay.tool_policy import check_tool_request
from gateway.relay.upstream import UpstreamPlan, plan_call
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.spans import SPAN_ADMISSION, SPAN_AUTH, phase


class _Named(Protocol):
    @property
    def model(self) -> str: ...


R = TypeVar("R", bound=_Named)


@dataclass(slots=True)
class AdmittedRequest:
    """A request past admission: who, under which policy, what it asks, and its reservation."""

    endpoint: Endpoint
    principal: Principal
    grant: Grant
    snapshot: PolicySnapshot
    request: AnyRequest
    plan: UpstreamPlan
    reservation: Admission

    @property
    def client_id(self) -> str:
        return self.principal.client_id

    def stream_checks(self) -> list[StreamCheck]:
        """The output checks of this stream, in order: words and patterns, then the loop detector."""
        fmt = self.request.response_format if isinstance(self.request, ChatCompletionRequest) else None
        json_content = isinstance(fmt, ResponseFormatJsonObject | ResponseFormatJsonSchema)
        checks: list[StreamCheck] = [
            self.snapshot.guardrails.stream_check(self.client_id, json_content=json_content)
        ]
        loop = loop_check_for(self.snapshot.bundle, self.client_id)
        if loop is not None:
            checks.append(loop)
        return checks

    def engine_repetition(self) -> tuple[Stop, Decision] | None:
        """How vLLM's ``repetition`` finish is reported, when the policy sends the engine backstop."""
        if self.plan.repetition is None:
            return None
        loops = self.snapshot.bundle.loops
        decision = Decision(
            loops.rule_id, "loop", "block", "enforce", "output", 0, 0, detail=(("source", "engine"),)
        )
        return engine_repetition_stop(loops), decision

    async def settle(self, used_tokens: int) -> None:
        await self.reservation.settle(used_tokens)


class Admitter:
    """Authenticates, decodes, authorises and reserves, in that order."""

    __slots__ = ("_authenticator", "_gate", "_limiter", "_max_body_bytes", "_policy")

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        policy: PolicyStore,
        limiter: RateLimiter,
        max_body_bytes: int,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self._gate = gate  # raises a GatewayError when no request may be served (audit sink down)
        self._authenticator = authenticator
        self._policy = policy
        self._limiter = limiter
        self._max_body_bytes = max_body_bytes

    async def authenticate(self, request: Request[Any, Any, Any], record: RequestRecord) -> Principal:
        with phase(SPAN_AUTH):
            try:
                principal = await self._authenticator.authenticate(request.headers.get("authorization"))
            except AuthError as exc:
                record.auth_failure = exc.reason
                if exc.status == 503:
                    raise ServiceUnavailable(exc.description, code="auth_unavailable") from None
                raise Unauthenticated(
                    exc.description, headers={"www-authenticate": exc.www_authenticate}
                ) from None
        record.client_id = principal.client_id
        return principal

    @staticmethod
    def authorise(
        principal: Principal, snapshot: PolicySnapshot, model: str | None, endpoint: EndpointName
    ) -> Grant:
        try:
            return authorize(principal, snapshot.bundle.clients, model, endpoint)
        except Forbidden as exc:
            raise PermissionDenied(
                exc.description, headers={"www-authenticate": exc.www_authenticate}
            ) from None

    async def read(
        self, request: Request[Any, Any, Any], record: RequestRecord, request_type: type[R]
    ) -> tuple[Principal, PolicySnapshot, R]:
        """Authenticate, then read and decode the body; the policy snapshot the whole request uses."""
        if self._gate is not None:
            self._gate()  # before any work: a refused request must not cost a token check or a read
        principal = await self.authenticate(request, record)
        snapshot = self._policy.current  # one snapshot for the whole request, even across a reload
        record.policy_version = snapshot.short_version
        body = await read_body(request, self._max_body_bytes)
        try:
            parsed = msgspec.json.decode(body, type=request_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise decode_error(exc) from None
        record.model = parsed.model
        return principal, snapshot, parsed

    async def admit(
        self, request: Request[Any, Any, Any], record: RequestRecord, endpoint: Endpoint
    ) -> AdmittedRequest:
        principal, snapshot, parsed = await self.read(request, record, endpoint.request_type)
        record.stream = parsed.stream
        grant = self.authorise(principal, snapshot, parsed.model, endpoint.name)
        bundle = snapshot.bundle
        check_tool_request(parsed, bundle.generation, grant)
        plan = plan_call(parsed, bundle.generation, repetition_detection_params(bundle.loops))
        record.max_tokens = plan.max_tokens
        record.temperature = plan.temperature
        reservation = await self.reserve(principal, snapshot, grant, plan.reserve_tokens, record)
        return AdmittedRequest(endpoint, principal, grant, snapshot, parsed, plan, reservation)

    async def reserve(
        self,
        principal: Principal,
        snapshot: PolicySnapshot,
        grant: Grant,
        tokens: int,
        record: RequestRecord,
    ) -> Admission:
        """One request and ``tokens`` reserved against the client's limits; 429 or 503 when refused."""
        limits = effective_limits(snapshot, grant)
        with phase(SPAN_ADMISSION) as span:
            span.set_attribute("menshen.reserve_tokens", tokens)
            try:
                return await self._limiter.admit(
                    principal.client_id, limits, tokens, snapshot.bundle.limits.on_redis_error
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


def effective_limits(snapshot: PolicySnapshot, grant: Grant) -> TierLimits:
    """The tier's limits with the client's own overrides on top."""
    tier = snapshot.bundle.limits.tiers.get(grant.tier, TierLimits())
    client = grant.policy
    if client is None or client.limits is None:
        return tier
    override = client.limits.model_dump(exclude_none=True)
    return tier.model_copy(update=override)


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``."""
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


__all__ = ["AdmittedRequest", "Admitter", "effective_limits", "read_body"]

"""GET /v1/models: what the engines serve (the union of their last model lists), limited to what the caller
may use."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from gateway.errors import GatewayError, PermissionDenied, ServiceUnavailable
from gateway.protocol import ModelCard, ModelList
from gateway.state import GatewayState
from gateway.telemetry.record import RequestRecord


@get("/v1/models", status_code=200)
async def list_models(
    request: Request[Any, Any, Any], gateway: NamedDependency[GatewayState]
) -> ASGIResponse:
    record = RequestRecord(
        route="/v1/models", operation="models", method="GET", scope_state=request.scope["state"]
    )
    upstreams = gateway.upstreams
    try:
        principal = await gateway.admitter.authenticate(request, record)
        snapshot = gateway.policy.current
        grant = gateway.admitter.authorise(principal, snapshot, None, "models")
        if not upstreams.any_answered:
            await upstreams.refresh(min_gap_s=1.0)
            if not upstreams.any_answered:
                raise ServiceUnavailable(
                    "The model engine is unavailable. Retry later.", code="engine_unavailable"
                )
        served = upstreams.cards()
        now = int(time.time())
        cards = [
            ModelCard(id=m.id, created=m.created or now, owned_by="menshen", max_model_len=m.max_model_len)
            for m in served
            if grant.allows_model(m.id)
        ]
        if not cards and served:
            raise PermissionDenied("This client may not use any model served here.")
    except GatewayError as exc:
        gateway.recorder.finish(record, exc)
        raise
    gateway.recorder.finish(record, None)
    return ASGIResponse(body=msgspec.json.encode(ModelList(cards)), media_type="application/json")


__all__ = ["list_models"]

"""GET /v1/models: what the engine serves, limited to what the caller may use."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from engine.client import EngineError, EngineHTTPError
from gateway.errors import GatewayError, PermissionDenied
from gateway.protocol import ModelCard, ModelList, UpModelList
from gateway.relay.errors import engine_error
from gateway.state import GatewayState
from gateway.telemetry.record import RequestRecord

_decode_models = msgspec.json.Decoder(UpModelList).decode


@get("/v1/models", status_code=200)
async def list_models(
    request: Request[Any, Any, Any], gateway: NamedDependency[GatewayState]
) -> ASGIResponse:
    record = RequestRecord(
        route="/v1/models", operation="models", method="GET", scope_state=request.scope["state"]
    )
    try:
        principal = await gateway.admitter.authenticate(request, record)
        snapshot = gateway.policy.current
        grant = gateway.admitter.authorise(principal, snapshot, None, "models")
        try:
            response = await gateway.engine.get("/v1/models")
        except EngineError as exc:
            raise engine_error(exc) from None
        if response.status_code != 200:
            raise engine_error(EngineHTTPError(response.status_code, response.content))
        upstream = _decode_models(response.content)
    except GatewayError as exc:
        gateway.recorder.finish(record, exc)
        raise
    except (msgspec.DecodeError, msgspec.ValidationError):
        exc2 = GatewayError("The engine returned an unreadable model list.")
        gateway.recorder.finish(record, exc2)
        raise exc2 from None
    now = int(time.time())
    cards = [
        ModelCard(id=m.id, created=m.created or now, owned_by="menshen", max_model_len=m.max_model_len)
        for m in upstream.data
        if grant.allows_model(m.id)
    ]
    if not cards and upstream.data:
        exc3 = PermissionDenied("This client may not use any model served here.")
        gateway.recorder.finish(record, exc3)
        raise exc3
    gateway.recorder.finish(record, None)
    return ASGIResponse(body=msgspec.json.encode(ModelList(cards)), media_type="application/json")


__all__ = ["list_models"]

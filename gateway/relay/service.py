"""The life of one completion request, in the order it happens.

    admission   authenticate → read and decode → authorise → reserve limits    (relay/admission.py)
    input guard words and patterns on every prompt text; block or mask           (relay/input_guard.py)
    engine      the upstream serving ``model`` (relay/upstreams.py); the body built once, streamed
                over aiohttp                                                     (relay/upstream.py)
    stream      transcode through the stream pipeline; cut on a hit              (relay/stream.py)
    settle      usage reconciles the reservation; the record is written once

Routes stay thin: they hand the request here with its ``Endpoint``. Each step raises a ``GatewayError`` that
the app renders in the OpenAI error shape; whatever was reserved is settled on every path, including client
disconnects.
"""

from __future__ import annotations

import secrets
from typing import Any

from anyio import CancelScope
from litestar import Request
from litestar.response.base import ASGIResponse

from engine.client import EngineError, EngineStream
from gateway.errors import GatewayError
from gateway.guardrails.guards import GuardRegistry
from gateway.relay.admission import AdmittedRequest, Admitter
from gateway.relay.disconnect import ClientDisconnected, run_until_disconnect
from gateway.relay.endpoints import Endpoint
from gateway.relay.errors import engine_error
from gateway.relay.input_guard import classify_input, guard_input
from gateway.relay.response import SSEResponse
from gateway.relay.stream import Relay
from gateway.relay.upstreams import UpstreamSet
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.spans import engine_span, inject_traceparent

_JSON_HEADERS = {"content-type": "application/json"}


class RelayService:
    __slots__ = ("_admitter", "_guards", "_recorder", "_upstreams")

    def __init__(
        self,
        admitter: Admitter,
        upstreams: UpstreamSet,
        recorder: Recorder,
        guards: GuardRegistry | None = None,
    ) -> None:
        self._admitter = admitter
        self._upstreams = upstreams
        self._recorder = recorder
        self._guards = guards

    async def handle(self, request: Request[Any, Any, Any], endpoint: Endpoint) -> ASGIResponse:
        record = RequestRecord(
            route=endpoint.route, operation=endpoint.operation, scope_state=request.scope["state"]
        )
        try:
            admitted = await self._admitter.admit(request, record, endpoint)
        except GatewayError as exc:
            self._recorder.finish(record, exc)
            raise
        try:
            guard_input(admitted, record)
            guards = self._guards.for_bundle(admitted.snapshot.bundle) if self._guards is not None else None
            if guards is not None:
                await classify_input(admitted, record, guards)  # guard models, once, before the engine
            upstream = await self._open(admitted)
        except GatewayError as exc:
            await admitted.settle(0)
            self._recorder.finish(record, exc)
            raise
        except BaseException:
            with CancelScope(shield=True):
                await admitted.settle(0)
            raise
        request_id = secrets.token_hex(12)
        relay = Relay(admitted, upstream, record, self._recorder, request_id, guards)
        headers = {**admitted.reservation.headers, "x-request-id": request_id}
        if admitted.request.stream:
            return SSEResponse(relay.body(), headers)
        try:
            body = await run_until_disconnect(request.receive, relay.collect())
        except ClientDisconnected:
            return ASGIResponse(body=b"", status_code=499)
        except GatewayError as exc:
            exc.headers.update(headers)
            raise
        return ASGIResponse(body=body, headers={**_JSON_HEADERS, **headers}, status_code=200)

    async def _open(self, admitted: AdmittedRequest) -> EngineStream:
        """Build the upstream body once (after the input guard) and open the stream of the engine serving
        the model (404 ``model_not_found`` when none does)."""
        endpoint = admitted.endpoint
        upstream = await self._upstreams.resolve(admitted.request.model)
        body = admitted.plan.body(admitted.request)
        with engine_span(endpoint.operation, admitted.request.model, upstream.url):
            # Injected inside the client span: the engine's spans become its children.
            headers: dict[str, str] = {}
            inject_traceparent(headers)
            try:
                return await upstream.client.open_stream(endpoint.route, body, headers)
            except EngineError as exc:
                raise engine_error(exc) from None


__all__ = ["RelayService"]

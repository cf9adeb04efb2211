"""The life of one ``/v1/embeddings`` request: the completion flow without the stream.

    admission   authenticate → read and decode → authorise (endpoint ``embeddings``) → reserve the
                estimated input tokens
    input guard words and patterns on every input; a block is 400, a mask embeds the masked text
    engine      the upstream serving ``model``, one non-streamed POST of the re-serialised request
    settle      the engine's ``usage.prompt_tokens`` reconciles the reservation; recorded once

The client's answer is re-encoded with OpenAI's fields only. A client that goes away cancels the engine call
(its connection is closed) and the reservation is settled with the estimate, since the engine may have done
the work.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from anyio import CancelScope
from litestar import Request
from litestar.response.base import ASGIResponse
from opentelemetry.trace import INVALID_SPAN

from engine.client import EngineError
from gateway.auth import Grant, Principal
from gateway.errors import GatewayError, UpstreamError
from gateway.policy.store import PolicySnapshot
from gateway.protocol import EmbeddingRequest, EmbeddingResponse, UpEmbeddingResponse
from gateway.ratelimit import Admission
from gateway.relay.admission import Admitter
from gateway.relay.disconnect import ClientDisconnected, run_until_disconnect
from gateway.relay.endpoints import EMBEDDINGS, EmbeddingEndpoint
from gateway.relay.errors import engine_error
from gateway.relay.input_guard import guard_input
from gateway.relay.upstream import estimate_tokens
from gateway.relay.upstreams import Upstream, UpstreamSet
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.spans import engine_span, inject_traceparent

_JSON_HEADERS = {"content-type": "application/json"}
_decode_answer = msgspec.json.Decoder(UpEmbeddingResponse).decode


@dataclass(slots=True)
class AdmittedEmbedding:
    """An embedding request past admission: who, under which policy, what it asks, and its reservation."""

    principal: Principal
    grant: Grant
    snapshot: PolicySnapshot
    request: EmbeddingRequest
    reservation: Admission
    estimate: int  # the input tokens reserved

    @property
    def client_id(self) -> str:
        return self.principal.client_id


class EmbeddingsService:
    __slots__ = ("_admitter", "_recorder", "_upstreams")

    def __init__(self, admitter: Admitter, upstreams: UpstreamSet, recorder: Recorder) -> None:
        self._admitter = admitter
        self._upstreams = upstreams
        self._recorder = recorder

    async def handle(
        self, request: Request[Any, Any, Any], endpoint: EmbeddingEndpoint = EMBEDDINGS
    ) -> ASGIResponse:
        record = RequestRecord(
            route=endpoint.route, operation=endpoint.operation, scope_state=request.scope["state"]
        )
        try:
            admitted = await self._admit(request, record, endpoint)
        except GatewayError as exc:
            self._recorder.finish(record, exc)
            raise
        headers = {**admitted.reservation.headers, "x-request-id": secrets.token_hex(12)}
        try:
            guard_input(admitted, record)
            upstream = await self._upstreams.resolve(admitted.request.model)
            answer = await run_until_disconnect(request.receive, self._call(admitted, upstream, endpoint))
        except ClientDisconnected:
            record.disconnected = True
            await self._settle(admitted, record, admitted.estimate)
            return ASGIResponse(body=b"", status_code=499)
        except GatewayError as exc:
            await admitted.reservation.settle(0)
            exc.headers.update(headers)
            self._recorder.finish(record, exc)
            raise
        except BaseException:
            with CancelScope(shield=True):
                await admitted.reservation.settle(0)
            raise
        record.prompt_tokens = answer.usage.prompt_tokens
        await self._settle(admitted, record, answer.usage.total_tokens or answer.usage.prompt_tokens)
        body = msgspec.json.encode(answer)
        return ASGIResponse(body=body, headers={**_JSON_HEADERS, **headers}, status_code=200)

    async def _admit(
        self, request: Request[Any, Any, Any], record: RequestRecord, endpoint: EmbeddingEndpoint
    ) -> AdmittedEmbedding:
        admitter = self._admitter
        principal, snapshot, parsed = await admitter.read(request, record, endpoint.request_type)
        grant = admitter.authorise(principal, snapshot, parsed.model, endpoint.name)
        estimate = estimate_tokens(parsed.texts())
        reservation = await admitter.reserve(principal, snapshot, grant, estimate, record)
        return AdmittedEmbedding(principal, grant, snapshot, parsed, reservation, estimate)

    async def _call(
        self, admitted: AdmittedEmbedding, upstream: Upstream, endpoint: EmbeddingEndpoint
    ) -> EmbeddingResponse:
        """The engine's answer for the (masked) request, re-encoded for the client."""
        request = admitted.request
        with engine_span(endpoint.operation, request.model, upstream.url):
            headers: dict[str, str] = {}
            inject_traceparent(headers)  # inside the client span: the engine's spans become its children
            try:
                raw = await upstream.client.post_json(endpoint.route, msgspec.json.encode(request), headers)
            except EngineError as exc:
                raise engine_error(exc) from None
        try:
            answer = _decode_answer(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError("The engine returned an unreadable embedding answer.") from None
        return EmbeddingResponse.from_upstream(answer, request.model)

    async def _settle(self, admitted: AdmittedEmbedding, record: RequestRecord, tokens: int) -> None:
        with CancelScope(shield=True):
            try:
                await admitted.reservation.settle(tokens)
            finally:
                # No stream span: the engine call has its own client span.
                self._recorder.finish_stream(record, INVALID_SPAN, None)


__all__ = ["AdmittedEmbedding", "EmbeddingsService"]

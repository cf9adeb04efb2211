"""The flow of one completion request, from bearer token to settled reservation.

    auth ─► decode and validate ─► authorise model ─► admission (limits) ─► input guard
         ─► engine stream ─► transcode through the stream pipeline ─► settle ─► record

Routes stay thin: they hand the request here. Each step raises a ``GatewayError`` that the app renders in
the OpenAI error shape; whatever was reserved is settled on every path, including client disconnects.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import msgspec
from anyio import CancelScope
from litestar import Request
from litestar.response.base import ASGIResponse

from engine.client import EngineError, EngineHTTPError, EngineStream, EngineTimeout
from gateway.errors import (
    ContentFiltered,
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.guardrails.pipeline import Decision, StreamPipeline
from gateway.protocol import (
    AnyRequest,
    ChatCompletionRequest,
    CompletionRequest,
    OutChatFullChoice,
    OutCompletion,
    OutMessage,
    OutTextChoice,
    SSEDecoder,
    TextPart,
    frame,
)
from gateway.relay.disconnect import ClientDisconnected, run_until_disconnect
from gateway.relay.errors import decode_error, engine_error
from gateway.relay.record import RequestRecord
from gateway.relay.response import SSEResponse
from gateway.relay.transcoder import Kind, Transcoder, UpstreamStreamError
from gateway.relay.upstream import build_upstream_call
from gateway.telemetry.spans import SPAN_INPUT_GUARD, SPAN_STREAM, Operation, engine_span, phase, start_span

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.state import GatewayState, RequestContext

_JSON_HEADERS = {"content-type": "application/json"}


class RelayService:
    def __init__(self, state: GatewayState) -> None:
        self._state = state

    async def handle(self, request: Request[Any, Any, Any], kind: Kind) -> ASGIResponse:
        state = self._state
        record = RequestRecord(
            route="/v1/chat/completions" if kind == "chat" else "/v1/completions",
            operation="chat" if kind == "chat" else "text_completion",
            scope_state=request.scope["state"],
        )
        try:
            ctx = await state.admit(
                request, record, "chat" if kind == "chat" else "completions", self._parse(kind)
            )
        except GatewayError as exc:
            state.recorder.finish(record, exc)
            raise
        try:
            call = ctx.call
            guarded = self._input_guard(ctx, record)
            body = call.body if guarded is None else guarded
            path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
            operation: Operation = "chat" if kind == "chat" else "text_completion"
            with engine_span(operation, ctx.request.model, state.engine.config.base_url):
                # Injected inside the client span: the engine's spans become its children.
                headers = state.recorder.upstream_headers()
                try:
                    upstream = await state.engine.open_stream(path, body, headers)
                except EngineError as exc:
                    raise engine_error(exc) from None
        except GatewayError as exc:
            await ctx.settle(0)
            state.recorder.finish(record, exc)
            raise
        except BaseException:
            with CancelScope(shield=True):
                await ctx.settle(0)
            raise
        request_id = secrets.token_hex(12)
        req = ctx.request
        pipeline = StreamPipeline(ctx.stream_checks())
        transcoder = Transcoder(
            kind=kind,
            request_id=request_id,
            model=req.model,
            pipeline=pipeline,
            include_usage=req.wants_usage,
            prompt_estimate=call.prompt_estimate,
            collect=not req.stream,
            repetition=ctx.engine_repetition(),
        )
        response_headers = {**ctx.headers, "x-request-id": request_id}
        if req.stream:
            return SSEResponse(self._relay(ctx, upstream, transcoder, pipeline, record), response_headers)
        try:
            await run_until_disconnect(
                request.receive, self._drain(self._relay(ctx, upstream, transcoder, pipeline, record), record)
            )
        except ClientDisconnected:
            return ASGIResponse(body=b"", status_code=499)
        except GatewayError as exc:
            exc.headers.update(response_headers)
            raise
        body_bytes = self._full_response(kind, transcoder)
        return ASGIResponse(body=body_bytes, headers={**_JSON_HEADERS, **response_headers}, status_code=200)

    @staticmethod
    def _parse(kind: Kind) -> type[AnyRequest]:
        return ChatCompletionRequest if kind == "chat" else CompletionRequest

    def _input_guard(self, ctx: RequestContext, record: RequestRecord) -> bytes | None:
        """Scan every prompt text; block, or return a re-serialised body with masked text."""
        guard = ctx.snapshot.guardrails
        req = ctx.request
        changed = False
        with phase(SPAN_INPUT_GUARD) as span:
            texts = self._prompt_parts(req)
            for index, text in enumerate(texts):
                if not text:
                    continue
                verdict = guard.scan(text, "input", ctx.client_id)
                for hit in verdict.hits:
                    decision = Decision(
                        hit.rule,
                        hit.category,
                        hit.action,
                        hit.mode,
                        "input",
                        hit.start,
                        hit.end,
                        text[hit.start : hit.end],
                    )
                    record.decisions.append(decision)
                    self._state.recorder.decision_event(span, decision)
                if verdict.action == "block":
                    rule = next(h for h in verdict.hits if h.action == "block" and h.mode == "enforce")
                    blocked = ContentFiltered(rule.rule, rule.category)
                    if isinstance(req, CompletionRequest):
                        blocked.param = "prompt"  # the error names the field that held the text
                    raise blocked
                if verdict.action == "mask" and verdict.text != text:
                    texts[index] = verdict.text
                    changed = True
        if not changed:
            return None
        self._apply_parts(req, texts)
        return build_upstream_call(
            req, ctx.snapshot.bundle.generation, ctx.snapshot.bundle.loops, ctx.repetition
        ).body

    @staticmethod
    def _prompt_parts(req: AnyRequest) -> list[str]:
        if isinstance(req, CompletionRequest):
            return req.prompt_text()
        parts: list[str] = []
        for message in req.messages:
            if isinstance(message.content, list):
                parts.extend(part.text for part in message.content)
            else:
                parts.append(message.content or "")
        return parts

    @staticmethod
    def _apply_parts(req: AnyRequest, texts: list[str]) -> None:
        if isinstance(req, CompletionRequest):
            req.prompt = texts[0]
            return
        it = iter(texts)
        for message in req.messages:
            if isinstance(message.content, list):
                message.content = [TextPart(next(it)) for _ in message.content]
            else:
                value = next(it)
                message.content = value if message.content is not None else None

    async def _relay(
        self,
        ctx: RequestContext,
        upstream: EngineStream,
        transcoder: Transcoder,
        pipeline: StreamPipeline,
        record: RequestRecord,
    ) -> AsyncGenerator[bytes, None]:
        """The response body, streamed or collected by the transcoder.

        Its ``finally`` runs on every end: done, cut, error or client disconnect. A failure after the stream
        started is one final SSE error event, and is kept in ``record.failure`` for non-streamed answers.
        """
        decoder = SSEDecoder()
        error: GatewayError | None = None
        span = start_span(SPAN_STREAM)
        try:
            async for data in upstream.reads():
                out = transcoder.feed(decoder.feed(data))
                if record.ttft_s is None and transcoder.generated_tokens:
                    record.ttft_s = record.elapsed()
                if out:
                    yield out
                if transcoder.stop is not None:
                    break  # closing now makes vLLM abort; after [DONE] the body is read out to keep the connection
            yield transcoder.end()
        except (EngineError, UpstreamStreamError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = record.failure = _mid_stream_error(exc)
            yield frame(error.encode())
        finally:
            with CancelScope(shield=True):
                await upstream.aclose()
                record.disconnected = transcoder.finish_reason is None and error is None
                await self._settle(ctx, transcoder, pipeline, record, span, error)

    @staticmethod
    async def _drain(body: AsyncGenerator[bytes, None], record: RequestRecord) -> None:
        """A non-streamed answer runs the same relay; the transcoder collects the text instead of framing it."""
        try:
            async for _ in body:
                pass
        finally:
            await body.aclose()
        if record.failure is not None:
            raise record.failure

    async def _settle(
        self,
        ctx: RequestContext,
        transcoder: Transcoder,
        pipeline: StreamPipeline,
        record: RequestRecord,
        span: Span,
        error: GatewayError | None,
    ) -> None:
        usage = transcoder.final_usage()
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.finish_reason = transcoder.finish_reason
        record.decisions.extend(pipeline.decisions)
        if error is not None:
            record.error = error.code if isinstance(error.code, str) else "upstream_error"
            if not record.stream:
                record.status = error.status
        try:
            await ctx.settle(usage.total_tokens)
        finally:
            self._state.recorder.finish_stream(record, span, error)

    @staticmethod
    def _full_response(kind: Kind, transcoder: Transcoder) -> bytes:
        assert transcoder.collected is not None
        reasoning = "".join(transcoder.collected[0])
        content = "".join(transcoder.collected[1])
        finish = transcoder.finish_reason or "stop"
        choices: list[OutChatFullChoice] | list[OutTextChoice]
        if kind == "chat":
            message = OutMessage(role="assistant", content=content, reasoning=reasoning or None)
            choices = [OutChatFullChoice(0, message, finish_reason=finish)]
            obj = "chat.completion"
        else:
            choices = [OutTextChoice(0, content, finish_reason=finish)]
            obj = "text_completion"
        out = OutCompletion(
            id=transcoder.id,
            object=obj,
            created=transcoder.created or int(time.time()),
            model=transcoder.model,
            choices=choices,
            usage=transcoder.final_usage(),
            menshen=transcoder.extension,
        )
        return msgspec.json.encode(out)


def _mid_stream_error(exc: Exception) -> GatewayError:
    if isinstance(exc, UpstreamStreamError):
        return UpstreamError("The engine failed while generating; the answer is incomplete.")
    if isinstance(exc, EngineTimeout):
        return UpstreamTimeout(f"The engine stopped sending ({exc.phase} timeout); the answer is incomplete.")
    if isinstance(exc, EngineHTTPError | EngineError):
        return ServiceUnavailable("The engine connection broke while generating; the answer is incomplete.")
    return UpstreamError("The engine sent a malformed chunk; the answer is incomplete.")


__all__ = ["RelayService", "decode_error"]

"""Steps 7 to 9: the engine's stream through the transcoder and stream pipeline, then settle and record.

``relay`` is the response body, streamed to the client or collected for a non-streamed answer. Its
``finally`` runs on every end (done, cut, failed, client gone): the upstream is closed (vLLM aborts a half-read
generation), the reservation is settled with the usage, and the record is written once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import msgspec
from anyio import CancelScope
from opentelemetry.trace import Span

from engine.client import EngineError, EngineHTTPError, EngineStream, EngineTimeout
from gateway.errors import GatewayError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from gateway.guardrails.guard_watch import GuardWatch, guard_watch
from gateway.guardrails.guards import GuardSet
from gateway.guardrails.pipeline import StreamPipeline
from gateway.protocol import (
    OutChatFullChoice,
    OutCompletion,
    OutMessage,
    OutTextChoice,
    SSEDecoder,
    frame,
    guard_texts,
)
from gateway.relay.admission import AdmittedRequest
from gateway.relay.tool_stream import ToolCallOrderError
from gateway.relay.transcoder import Transcoder, UpstreamStreamError
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.spans import SPAN_STREAM, start_span


class Relay:
    """One request's stream: the engine's reads in, client frames out, settled and recorded at the end."""

    __slots__ = ("_admitted", "_pipeline", "_record", "_recorder", "_upstream", "_watch", "transcoder")

    def __init__(
        self,
        admitted: AdmittedRequest,
        upstream: EngineStream,
        record: RequestRecord,
        recorder: Recorder,
        request_id: str,
        guards: GuardSet | None = None,
    ) -> None:
        request = admitted.request
        self._admitted = admitted
        self._upstream = upstream
        self._record = record
        self._recorder = recorder
        checks = admitted.stream_checks()
        self._watch = _watch_of(admitted, guards)
        if self._watch is not None:
            # first: it never holds text, and judging the engine's text as it comes lets the final checkpoint
            # (before the finish chunk) cover what later checks still hold back
            checks.insert(0, self._watch)
        self._pipeline = StreamPipeline(checks)
        self.transcoder = Transcoder(
            endpoint=admitted.endpoint,
            request_id=request_id,
            model=request.model,
            pipeline=self._pipeline,
            include_usage=request.wants_usage,
            prompt_estimate=admitted.plan.prompt_estimate,
            collect=not request.stream,
            repetition=admitted.engine_repetition(),
            max_tool_calls=admitted.snapshot.bundle.generation.max_tool_calls,
        )

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The response body. A failure after the stream started is one final SSE error event, kept in
        ``record.failure`` for a non-streamed answer."""
        transcoder, record, watch = self.transcoder, self._record, self._watch
        decoder = SSEDecoder()
        error: GatewayError | None = None
        span = start_span(SPAN_STREAM)
        try:
            async for data in self._upstream.reads():
                payloads = decoder.feed(data)
                end = _answer_end(payloads) if watch is not None else None
                if watch is not None and end is not None:
                    # guard verdicts on the whole answer before the engine's finish chunk is transcoded
                    out = transcoder.feed(payloads[:end])
                    if out:
                        yield out
                    payloads = payloads[end:] if transcoder.stop is None else []
                    if watch.busy:
                        await watch.settle()
                out = transcoder.feed(payloads)
                if record.ttft_s is None and transcoder.generated_tokens:
                    record.ttft_s = record.elapsed()
                if out:
                    yield out
                if transcoder.stop is not None:
                    break  # closing now makes vLLM abort; after [DONE] the body is read out to keep the connection
            if watch is not None and transcoder.finish_reason is None:
                await watch.settle()
            yield transcoder.end()
        except (
            EngineError,
            UpstreamStreamError,
            ToolCallOrderError,
            msgspec.DecodeError,
            msgspec.ValidationError,
        ) as exc:
            error = record.failure = mid_stream_error(exc)
            yield frame(error.encode())
        finally:
            if watch is not None:
                watch.cancel()
            with CancelScope(shield=True):
                await self._upstream.aclose()
                record.disconnected = transcoder.finish_reason is None and error is None
                await self._settle(span, error)

    async def collect(self) -> bytes:
        """A non-streamed answer: the same relay, with the text collected instead of framed."""
        body = self.body()
        try:
            async for _ in body:
                pass
        finally:
            await body.aclose()
        if self._record.failure is not None:
            raise self._record.failure
        return self._full_response()

    async def _settle(self, span: Span, error: GatewayError | None) -> None:
        record, transcoder = self._record, self.transcoder
        usage = transcoder.final_usage()
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.finish_reason = transcoder.finish_reason
        record.decisions.extend(self._pipeline.decisions)
        if error is not None:
            record.error = error.code if isinstance(error.code, str) else "upstream_error"
            if not record.stream:
                record.status = error.status
        try:
            await self._admitted.settle(usage.total_tokens)
        finally:
            self._recorder.finish_stream(record, span, error)

    def _full_response(self) -> bytes:
        transcoder = self.transcoder
        collected = transcoder.collected or ([], [])
        reasoning, content = "".join(collected[0]), "".join(collected[1])
        finish = transcoder.finish_reason or "stop"
        endpoint = self._admitted.endpoint
        choices: list[OutChatFullChoice] | list[OutTextChoice]
        if endpoint.chat:
            assembler = transcoder.tools.assembler
            calls = assembler.calls() if assembler else None
            if calls and transcoder.tools.cut_open:
                calls.pop()  # cut inside its arguments: never hand a client half a call to run
                calls = calls or None
            # as vLLM: beside tool calls, content is null unless the model wrote some
            message = OutMessage(
                role="assistant",
                content=content or None if calls else content,
                reasoning=reasoning or None,
                tool_calls=calls,
            )
            choices = [OutChatFullChoice(0, message, finish_reason=finish)]
        else:
            choices = [OutTextChoice(0, content, finish_reason=finish)]
        out = OutCompletion(
            id=transcoder.id,
            object=endpoint.full_object,
            created=transcoder.created or int(time.time()),
            model=transcoder.model,
            choices=choices,
            usage=transcoder.final_usage(),
            menshen=transcoder.extension,
        )
        return msgspec.json.encode(out)


def _watch_of(admitted: AdmittedRequest, guards: GuardSet | None) -> GuardWatch | None:
    if guards is None:
        return None
    prompt = "\n\n".join(slot.text for slot in guard_texts(admitted.request) if slot.text)
    return guard_watch(guards, admitted.client_id, prompt)


def _answer_end(payloads: list[bytes]) -> int | None:
    """Index of the engine's finish chunk (compact JSON, as vLLM writes it) or of ``[DONE]``, if in this read."""
    for i, p in enumerate(payloads):
        if p == b"[DONE]" or b'"finish_reason":"' in p:
            return i
    return None


def mid_stream_error(exc: Exception) -> GatewayError:
    """The error event that ends a stream the engine broke after it started."""
    if isinstance(exc, UpstreamStreamError):
        return UpstreamError("The engine failed while generating; the answer is incomplete.")
    if isinstance(exc, EngineTimeout):
        return UpstreamTimeout(f"The engine stopped sending ({exc.phase} timeout); the answer is incomplete.")
    if isinstance(exc, EngineHTTPError | EngineError):
        return ServiceUnavailable("The engine connection broke while generating; the answer is incomplete.")
    return UpstreamError("The engine sent a malformed chunk; the answer is incomplete.")


__all__ = ["Relay", "mid_stream_error"]

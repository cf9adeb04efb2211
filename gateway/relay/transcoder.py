"""Per-request transcoding of engine chunks into client chunks, through the stream pipeline.

This is the hot path: one ``feed`` per network read, a msgspec decode and encode per chunk, and no
per-request work (policy lookups, logging) per chunk. It re-encodes only OpenAI fields, so vLLM's
``token_ids`` and friends never reach the client. Tool calls go through ``ToolCallRelay``: their arguments are
output, scanned per call in the pipeline's ``tool_arguments`` field.
"""

from __future__ import annotations

import msgspec

from gateway.guardrails.pipeline import Decision, Stop, StreamPipeline
from gateway.protocol import (
    DONE,
    OutChatChoice,
    OutChunk,
    OutDelta,
    OutTextChoice,
    OutToolCallDelta,
    UpChunk,
    Usage,
    frame,
)
from gateway.relay.endpoints import Endpoint
from gateway.relay.tool_stream import ToolCallRelay

_decode_chunk = msgspec.json.Decoder(UpChunk).decode
_encode = msgspec.json.Encoder().encode


class UpstreamStreamError(Exception):
    """The engine reported an error inside the stream."""

    def __init__(self, error: dict[str, object]) -> None:
        super().__init__("engine error in stream")
        self.error = error


class Transcoder:
    """Turns engine SSE payloads into client SSE frames; records usage, finish and timing facts."""

    __slots__ = (
        "_chat",
        "_include_usage",
        "_model",
        "_object",
        "_pipeline",
        "_prompt_estimate",
        "_reasoning_open",
        "_repetition",
        "_role_sent",
        "collected",
        "created",
        "extension",
        "finish_reason",
        "generated_tokens",
        "id",
        "stop",
        "tools",
        "upstream_done",
        "usage",
    )

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        request_id: str,
        model: str,
        pipeline: StreamPipeline,
        include_usage: bool,
        prompt_estimate: int,
        collect: bool = False,
        repetition: tuple[Stop, Decision] | None = None,
        max_tool_calls: int = 16,
    ) -> None:
        self._chat = endpoint.chat
        self._object = endpoint.chunk_object
        self.id = endpoint.id_prefix + request_id
        self._model = model
        self._pipeline = pipeline
        self._include_usage = include_usage
        self._prompt_estimate = prompt_estimate
        self._role_sent = False
        # Reasoning precedes content (Qwen3's <think> block): its held-back tail is checked and released
        # when content starts, so it neither trails the content nor lets content out past a pending block.
        self._reasoning_open = endpoint.chat
        # vLLM's own `repetition` finish (the engine backstop) is reported like the gateway's loop cut.
        self._repetition = repetition
        self.created = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.stop: Stop | None = None
        self.upstream_done = False
        self.generated_tokens = 0
        self.extension: dict[str, object] | None = None
        # Non-streamed responses collect (reasoning, content) pieces instead of framing them.
        self.collected: tuple[list[str], list[str]] | None = ([], []) if collect else None
        self.tools = ToolCallRelay(pipeline, max_tool_calls, collect=collect)

    @property
    def model(self) -> str:
        return self._model

    def feed(self, payloads: list[bytes]) -> bytes:
        """Transcode the payloads of one network read into the frames to send now."""
        frames: list[bytes] = []
        for payload in payloads:
            if self.stop is not None or self.upstream_done:
                break
            if payload == b"[DONE]":
                self.upstream_done = True
                break
            chunk = _decode_chunk(payload)
            if chunk.error is not None:
                raise UpstreamStreamError(chunk.error)
            if chunk.created:
                self.created = chunk.created
            if chunk.usage is not None:
                self.usage = chunk.usage
            for choice in chunk.choices:
                self._choice(choice.delta, choice.text, choice.finish_reason, frames)
        return b"".join(frames)

    def _choice(self, delta: object, text: str | None, finish: str | None, frames: list[bytes]) -> None:
        pipeline = self._pipeline
        reasoning = content = ""
        calls = None
        if self._chat and delta is not None:
            calls = getattr(delta, "tool_calls", None)
            content = getattr(delta, "content", None) or ""
            reasoning = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None) or ""
            if not self._role_sent and getattr(delta, "role", None):
                self._role_sent = True
                frames.append(self._frame(OutDelta(role="assistant", content="")))
        elif text:
            content = text
        if content or reasoning or calls:
            self.generated_tokens += 1
        out_r = pipeline.feed("reasoning", reasoning).text if reasoning else ""
        if content and self._reasoning_open and pipeline.stopped is None:
            out_r += self._close_reasoning()
        out_c = ""
        if content and pipeline.stopped is None:
            out_c = pipeline.feed("content", content).text
        if out_r or out_c:
            frames.append(self._delta_frame(out_r, out_c))
        if calls and pipeline.stopped is None:
            self._tool_frame(self.tools.feed(calls), frames)
        if pipeline.stopped is not None:
            self._stopped(pipeline.stopped, frames)
            return
        if finish is not None:
            self._flush(frames)
            if pipeline.stopped is not None:
                self._stopped(pipeline.stopped, frames)
                return
            if finish == "repetition" and self._repetition is not None:
                stop, decision = self._repetition
                pipeline.decisions.append(decision)
                self._stopped(stop, frames)
                return
            self.finish_reason = finish
            frames.append(self._final(finish, None))

    def _flush(self, frames: list[bytes]) -> None:
        pipeline = self._pipeline
        out_r = self._close_reasoning() if self._reasoning_open else ""
        out_c = pipeline.finish("content").text if pipeline.stopped is None else ""
        if out_r or out_c:
            frames.append(self._delta_frame(out_r, out_c))
        self._tool_frame(self.tools.close(), frames)

    def _close_reasoning(self) -> str:
        """Finish the reasoning field once; reasoning arriving later is not released (fail closed)."""
        self._reasoning_open = False
        return self._pipeline.finish("reasoning").text

    def _stopped(self, stop: Stop, frames: list[bytes]) -> None:
        self.stop = stop
        self.finish_reason = stop.finish_reason
        frames.append(self._final(stop.finish_reason, stop.extension))

    def end(self) -> bytes:
        """Frames after the engine is done (or cut): a flush if needed, the usage chunk, then ``[DONE]``."""
        frames: list[bytes] = []
        if self.finish_reason is None:
            # The engine ended without a finish chunk: release what checks hold, then finish.
            self._flush(frames)
            if self._pipeline.stopped is not None and self.stop is None:
                self._stopped(self._pipeline.stopped, frames)
            else:
                self.finish_reason = "stop"
                frames.append(self._final("stop", None))
        if self.collected is not None:
            return b""
        if self._include_usage:
            frames.append(frame(_encode(self._usage_chunk())))
        frames.append(DONE)
        return b"".join(frames)

    def final_usage(self) -> Usage:
        """Engine usage when it reported one; else counted from the chunks (cut or aborted streams)."""
        if self.usage is not None and self.stop is None:
            return self.usage
        prompt = self.usage.prompt_tokens if self.usage is not None else self._prompt_estimate
        completion = self.generated_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def _usage_chunk(self) -> OutChunk:
        return OutChunk(self.id, self._object, self.created, self._model, [], usage=self.final_usage())

    def _delta_frame(self, reasoning: str, content: str) -> bytes:
        if self.collected is not None:
            self.collected[0].append(reasoning)
            self.collected[1].append(content)
            return b""
        if self._chat:
            return self._frame(OutDelta(content=content or None, reasoning=reasoning or None))
        return frame(
            _encode(OutChunk(self.id, self._object, self.created, self._model, [OutTextChoice(0, content)]))
        )

    def _tool_frame(self, calls: list[OutToolCallDelta], frames: list[bytes]) -> None:
        # vLLM sends ``"content": null`` beside tool calls (``OutDelta`` keeps it when ``tool_calls`` is set)
        if calls:
            frames.append(self._frame(OutDelta(content=None, tool_calls=calls)))

    def _frame(self, delta: OutDelta) -> bytes:
        if self.collected is not None:
            return b""
        chunk = OutChunk(self.id, self._object, self.created, self._model, [OutChatChoice(0, delta)])
        return frame(_encode(chunk))

    def _final(self, finish: str, extension: dict[str, object] | None) -> bytes:
        self.extension = extension
        if self.collected is not None:
            return b""
        choices: list[OutChatChoice] | list[OutTextChoice]
        if self._chat:
            choices = [OutChatChoice(0, OutDelta(), finish_reason=finish)]
        else:
            choices = [OutTextChoice(0, "", finish_reason=finish)]
        return frame(
            _encode(OutChunk(self.id, self._object, self.created, self._model, choices, menshen=extension))
        )


__all__ = ["Transcoder", "UpstreamStreamError"]

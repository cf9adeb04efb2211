"""One generation of the fake engine: paces a script's tokens and writes them in vLLM's shapes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import wire
from tests.fakes.httpserver import Exchange
from tests.fakes.script import Piece, Plan, Script


@dataclass(slots=True)
class RequestRecord:
    """What the fake received for one ``/v1`` request and how that request ended."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float
    script: str | None = None
    status: int | None = None
    chunks_sent: int = 0
    finished_at: float | None = None
    aborted_at: float | None = None  # monotonic time the client's close was detected

    @property
    def aborted(self) -> bool:
        return self.aborted_at is not None


@dataclass(slots=True)
class Stats:
    requests_total: int = 0
    aborted_total: int = 0
    completed_total: int = 0
    running: int = 0
    generation_tokens: int = 0
    prompt_tokens: int = 0
    finished: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Generation:
    """One generation: paces the plan's pieces and writes them in vLLM's shapes."""

    stats: Stats
    reasoning_parser: bool
    fingerprint: str | None
    rate: float  # tokens/s; 0 = as fast as possible
    burst: int  # at rate 0, tokens written per turn of the event loop
    ex: Exchange
    record: RequestRecord | None
    script: Script
    plan: Plan
    chat: bool
    chunk_id: str
    created: int
    model: str
    prompt_tokens: int
    sent_tokens: int = 0
    done: bool = False
    tool_call_ids: tuple[str, ...] = ()
    _content: wire.TextChunkEncoder | None = None
    _reasoning: wire.TextChunkEncoder | None = None

    def __post_init__(self) -> None:
        cid, created, model, s = self.chunk_id, self.created, self.model, wire.SENTINEL
        self.tool_call_ids = tuple(wire.tool_call_id() for _ in self.plan.tool_calls)
        if self.chat:
            self._content = wire.TextChunkEncoder(wire.chat_delta_chunk(cid, created, model, {"content": s}))
            self._reasoning = wire.TextChunkEncoder(
                wire.chat_delta_chunk(cid, created, model, {"reasoning": s})
            )
        else:
            self._content = wire.TextChunkEncoder(wire.completion_chunk(cid, created, model, s))

    def aborted(self, ex: Exchange) -> None:
        if self.done:
            return
        stats = self.stats
        stats.aborted_total += 1
        stats.finished["abort"] += 1
        stats.generation_tokens += self.sent_tokens
        self.done = True
        if self.record is not None:
            self.record.aborted_at = ex.aborted_at

    def _finish(self, reason: str) -> None:
        stats = self.stats
        stats.completed_total += 1
        stats.finished[reason] += 1
        stats.generation_tokens += self.sent_tokens
        self.done = True

    async def _emit(self, chunk: dict[str, Any]) -> None:
        await self._emit_bytes(wire.sse(wire.encode(chunk)))

    async def _emit_bytes(self, event: bytes) -> None:
        await self.ex.write(event)
        if self.record is not None:
            self.record.chunks_sent += 1

    def _token_event(self, piece: Piece) -> bytes:
        if piece.reasoning and self.reasoning_parser and self._reasoning is not None:
            return self._reasoning(piece.text)
        assert self._content is not None
        return self._content(piece.text)

    def _delta(self, piece: Piece | None) -> dict[str, Any]:
        if piece is None:  # the end-of-sequence token decodes to nothing
            # the reasoning and tool parsers return no delta for it; without them the text is ""
            return {} if self.reasoning_parser or self.plan.tool_calls else {"content": ""}
        if piece.reasoning and self.reasoning_parser:
            return wire.delta(reasoning=piece.text)
        return wire.delta(content=piece.text)

    def _finish_chunk(self, piece: Piece | None, fingerprint: str | None) -> dict[str, Any]:
        pl, cid, created, model = self.plan, self.chunk_id, self.created, self.model
        if not self.chat:
            text = piece.text if piece is not None else ""
            return wire.completion_chunk(
                cid, created, model, text, pl.finish_reason, pl.stop_reason, fingerprint
            )
        delta = self._delta(piece)
        return wire.chat_finish_chunk(
            cid, created, model, delta, pl.finish_reason, pl.stop_reason, fingerprint
        )

    def _usage(self, *, full: bool) -> dict[str, Any]:
        reasoning = self.plan.reasoning_tokens if (self.chat and self.reasoning_parser) else None
        return wire.usage(self.prompt_tokens, self.plan.completion_tokens, reasoning, full=full)

    async def stream(self, include_usage: bool) -> None:
        script, pl, ex = self.script, self.plan, self.ex
        rate = self.rate
        interval = 1.0 / rate if rate > 0 else 0.0
        fingerprint = None if include_usage else self.fingerprint
        await ex.start_stream(200, wire.SSE_CONTENT_TYPE)
        if script.first_token_delay > 0:
            await asyncio.sleep(script.first_token_delay)
        if self.chat:
            await self._emit(wire.chat_role_chunk(self.chunk_id, self.created, self.model))
        # the EOS token, when there is one, arrives as one more (empty) token carrying finish_reason
        tokens: list[Piece | None] = [*pl.pieces, None] if pl.eos or not pl.pieces else list(pl.pieces)
        last = len(tokens) - 1
        next_at = time.monotonic()
        for i, piece in enumerate(tokens):
            if script.error_after == i:
                await self._stream_error()
                return
            if script.close_after == i:
                self._finish("error")
                ex.abort()
                return
            pause = script.stall_before(i)
            if i > 0 and interval:
                next_at += interval
                pause += max(0.0, next_at - time.monotonic())
            if pause > 0:
                await asyncio.sleep(pause)
            elif i > 0 and i % self.burst == 0:
                await asyncio.sleep(0)  # as fast as possible, yet interleaved with the other streams
            if i == last:
                await self._emit_tool_calls()
                await self._emit(self._finish_chunk(piece, fingerprint))
            else:
                assert piece is not None  # only the last token may be the EOS
                # the hot path: no awaits unless the client reads slower than we write
                if not ex.write_nowait(self._token_event(piece)):
                    await ex.drain()
                if self.record is not None:
                    self.record.chunks_sent += 1
            self.sent_tokens += 1
        if script.error_after is not None and script.error_after > last:
            await self._stream_error()
            return
        if script.close_after is not None and script.close_after > last:
            self._finish("error")
            ex.abort()
            return
        if include_usage:
            usage = self._usage(full=False)
            maker = wire.chat_usage_chunk if self.chat else wire.completion_usage_chunk
            await self._emit(maker(self.chunk_id, self.created, self.model, usage, self.fingerprint))
        await ex.write(wire.DONE)
        await ex.end_stream()
        self._finish(pl.finish_reason)

    async def _emit_tool_calls(self) -> None:
        """The hermes parser's deltas: per call, the name first, then one delta per argument fragment."""
        cid, created, model = self.chunk_id, self.created, self.model
        for index, (call_id, call) in enumerate(zip(self.tool_call_ids, self.plan.tool_calls, strict=True)):
            await self._emit(
                wire.chat_delta_chunk(cid, created, model, wire.tool_call_start(index, call_id, call.name))
            )
            for fragment in call.fragments:
                delta = wire.tool_call_arguments(index, fragment)
                await self._emit(wire.chat_delta_chunk(cid, created, model, delta))
            self.sent_tokens += 1 + len(call.fragments)

    async def _stream_error(self) -> None:
        message = self.script.error_message or "Internal server error"
        await self.ex.write(wire.stream_error_event(message, 500, "InternalServerError"))
        await self.ex.write(wire.DONE)
        await self.ex.end_stream()
        self._finish("error")

    async def full(self) -> None:
        script, pl, ex = self.script, self.plan, self.ex
        rate = self.rate
        n_tokens = pl.completion_tokens
        delay = script.first_token_delay + (max(0, n_tokens - 1) / rate if rate > 0 else 0.0)
        delay += sum(s for _, s in script.stalls)
        if delay > 0:
            await asyncio.sleep(delay)
        if script.close_after is not None:
            self._finish("error")
            ex.abort()
            return
        if script.error_after is not None:
            message = script.error_message or "Internal server error"
            await ex.send(500, wire.error_body(message, 500, "InternalServerError"))
            self._finish("error")
            return
        self.sent_tokens = n_tokens
        content = "".join(p.text for p in pl.pieces if not (p.reasoning and self.reasoning_parser))
        fp = self.fingerprint
        if self.chat:
            reasoning: str | None = None
            if self.reasoning_parser:
                reasoning = "".join(p.text for p in pl.pieces if p.reasoning) or None
            calls = [
                wire.tool_call(call_id, call.name, call.arguments)
                for call_id, call in zip(self.tool_call_ids, pl.tool_calls, strict=True)
            ]
            body = wire.chat_completion(
                self.chunk_id,
                self.created,
                self.model,
                content if content or (reasoning is None and not calls) else None,
                reasoning,
                pl.finish_reason,
                pl.stop_reason,
                self._usage(full=True),
                fp,
                calls,
            )
        else:
            text = "".join(p.text for p in pl.pieces)
            body = wire.text_completion(
                self.chunk_id,
                self.created,
                self.model,
                text,
                pl.finish_reason,
                pl.stop_reason,
                self._usage(full=True),
                fp,
            )
        await ex.send(200, wire.encode(body))
        self._finish(pl.finish_reason)


__all__ = ["Generation", "RequestRecord", "Stats"]

"""Streamed tool calls through the stream pipeline: each call's arguments are output, scanned like content.

vLLM (hermes parser) streams calls one after another: the first delta of call ``i`` carries ``id``, ``type``
and ``function.name``, later ones ``function.arguments`` fragments. The header is relayed at once; the
fragments go through the pipeline's ``tool_arguments`` field, which holds back a tail exactly as for content.
When call ``i + 1`` starts, call ``i`` is finished (its held-back tail checked and released under index ``i``),
so each call is scanned on its own and nothing of one call is released under another's index. A delta for a
call already finished is a malformed stream (fail closed). The policy caps the calls of one answer.
"""

from __future__ import annotations

from gateway.guardrails.pipeline import Decision, Stop, StreamPipeline
from gateway.protocol import (
    OutFunctionDelta,
    OutToolCallDelta,
    ToolCallAssembler,
    UpFunctionDelta,
    UpToolCallDelta,
)

TOOL_CALL_LIMIT = "tool_call_limit"  # value of ``menshen.stopped`` when the cap cuts an answer
TOOL_CALL_RULE = "generation.max_tool_calls"


class ToolCallOrderError(Exception):
    """The engine went back to a tool call it had already moved past."""


class ToolCallRelay:
    """One stream's tool calls: headers relayed, argument fragments scanned per call, the number of calls capped.

    With ``collect`` the released pieces go to a ``ToolCallAssembler`` (a non-streamed answer) instead of being
    returned for framing.
    """

    __slots__ = ("_count", "_current", "_last", "_limit", "_pipeline", "assembler")

    def __init__(self, pipeline: StreamPipeline, limit: int, *, collect: bool = False) -> None:
        self._pipeline = pipeline
        self._limit = limit
        self._current = -1  # the call whose arguments are streaming, -1 when none
        self._last = -1  # the highest index started: calls only move forward
        self._count = 0
        self.assembler = ToolCallAssembler() if collect else None

    def feed(self, deltas: list[UpToolCallDelta]) -> list[OutToolCallDelta]:
        """The pieces that may be sent now; the pipeline's ``stopped`` is set on a block, a loop or the cap."""
        out: list[OutToolCallDelta] = []
        pipeline = self._pipeline
        for delta in deltas:
            if pipeline.stopped is not None:
                break
            index = delta.index
            fn = delta.function
            if index != self._current:
                if index <= self._last:
                    raise ToolCallOrderError(f"tool call {index} resumed after call {self._last}")
                self._close(out)
                if pipeline.stopped is not None:
                    break
                self._count += 1
                if self._count > self._limit:
                    self._cut()
                    break
                self._current = self._last = index
                name = fn.name if fn is not None else None
                self._emit(
                    out,
                    OutToolCallDelta(
                        id=delta.id, type="function", index=index, function=OutFunctionDelta(name)
                    ),
                )
            if fn is not None and fn.arguments:
                released = pipeline.feed("tool_arguments", fn.arguments).text
                if released:
                    self._emit(
                        out, OutToolCallDelta(index=index, function=OutFunctionDelta(arguments=released))
                    )
        return out

    @property
    def cut_open(self) -> bool:
        """The stream stopped inside a call's arguments (that call is incomplete)."""
        return self._current >= 0 and self._pipeline.stopped is not None

    def close(self) -> list[OutToolCallDelta]:
        """The stream is ending: the open call's held-back tail, once checked."""
        out: list[OutToolCallDelta] = []
        if self._pipeline.stopped is None:
            self._close(out)
        return out

    def _close(self, out: list[OutToolCallDelta]) -> None:
        if self._current < 0:
            return
        index, self._current = self._current, -1
        released = self._pipeline.finish("tool_arguments").text
        if released:
            self._emit(out, OutToolCallDelta(index=index, function=OutFunctionDelta(arguments=released)))
        if self._pipeline.stopped is not None:
            self._current = index  # stopped in this call's tail: it stays incomplete

    def _cut(self) -> None:
        pipeline = self._pipeline
        pipeline.decisions.append(
            Decision(
                TOOL_CALL_RULE,
                "tool_calls",
                "block",
                "enforce",
                "tool_arguments",
                0,
                0,
                detail=(("limit", self._limit),),
            )
        )
        pipeline.stopped = Stop(
            "length", {"stopped": TOOL_CALL_LIMIT, "rule": TOOL_CALL_RULE, "limit": self._limit}
        )

    def _emit(self, out: list[OutToolCallDelta], piece: OutToolCallDelta) -> None:
        if self.assembler is None:
            out.append(piece)
            return
        fn = piece.function
        up_fn = UpFunctionDelta(fn.name, fn.arguments) if fn is not None else None
        self.assembler.add((UpToolCallDelta(piece.index, piece.id, piece.type, up_fn),))


__all__ = ["TOOL_CALL_LIMIT", "TOOL_CALL_RULE", "ToolCallOrderError", "ToolCallRelay"]

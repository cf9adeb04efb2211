"""Scripted outputs for the fake engine: what it "generates", how fast, and which fault it injects.

A script is a list of pieces; each piece is one token (one SSE chunk), content or ``reasoning``. The fake
tokenizer counts one token per piece, plus one end-of-sequence token when the script finishes with ``stop``
and no stop string, as Qwen3's ``<|im_end|>`` is counted in vLLM's ``completion_tokens``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

_WORD_RE: Final = re.compile(r"\w+|[^\w\s]")
_SCRIPT_TAG_RE: Final = re.compile(r"\[\[script:([\w.\-]+)\]\]")
# Benign words, so that benchmark text neither trips word filters nor loops.
_LOREM: Final = (
    "the a of to and in is it that for on with as was at by this be from or an are which we can "
    "river stone light garden morning paper window music table winter bridge market letter cloud "
    "engine signal harbor forest quiet simple bright gentle careful open early later often "
    "build carry follow gather measure notice offer prepare reach share travel wonder write "
    "north south east west green blue silver golden small large ancient modern"
)


@dataclass(frozen=True, slots=True)
class Piece:
    """One generated token: visible ``content`` or, with the reasoning parser, ``reasoning`` text."""

    text: str
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class ToolCallPiece:
    """One tool call the model makes: its name, then its JSON arguments in the fragments they stream in."""

    name: str
    fragments: tuple[str, ...] = ("{}",)

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)


@dataclass(frozen=True, slots=True)
class Script:
    """What one request gets back.

    Timing: ``first_token_delay`` is the prefill stall (headers are sent first, as vLLM does);
    ``rate`` (tokens/s, 0 = as fast as possible, None = the engine's default) paces later tokens;
    ``stalls`` adds pauses ``(before piece i, seconds)``; ``response_delay`` holds back even the headers.
    Faults: ``http_status`` answers an error before streaming; ``error_after`` sends vLLM's mid-stream error
    event after that many pieces; ``close_after`` drops the connection after that many pieces.
    Tools: ``tool_calls`` follow the pieces, as vLLM's hermes parser streams them; the answer then finishes with
    ``tool_calls`` (``stop`` for a named ``tool_choice``).
    """

    pieces: tuple[Piece, ...] = ()
    tool_calls: tuple[ToolCallPiece, ...] = ()
    finish_reason: str = "stop"
    stop_reason: str | int | None = None
    rate: float | None = None
    first_token_delay: float = 0.0
    stalls: tuple[tuple[int, float], ...] = ()
    response_delay: float = 0.0
    http_status: int | None = None
    error_message: str | None = None
    error_after: int | None = None
    close_after: int | None = None

    @classmethod
    def of(
        cls,
        content: Sequence[str] | str = (),
        reasoning: Sequence[str] | str = (),
        **kwargs: Any,
    ) -> Script:
        """Reasoning pieces first, then content; a plain string is split into word tokens."""
        pieces = [Piece(t, reasoning=True) for t in _as_tokens(reasoning)]
        pieces += [Piece(t) for t in _as_tokens(content)]
        return cls(pieces=tuple(pieces), **kwargs)

    @classmethod
    def lorem(cls, tokens: int, seed: int = 0, reasoning_tokens: int = 0, **kwargs: Any) -> Script:
        """Deterministic, non-repeating-looking text of ``tokens`` content pieces."""
        rng = random.Random(seed)
        vocab = _LOREM.split()
        words = [" " + rng.choice(vocab) for _ in range(reasoning_tokens + tokens)]
        pieces = [Piece(w, reasoning=True) for w in words[:reasoning_tokens]]
        pieces += [Piece(w) for w in words[reasoning_tokens:]]
        return cls(pieces=tuple(pieces), **kwargs)

    @classmethod
    def calling(cls, *calls: ToolCallPiece, content: Sequence[str] | str = (), **kwargs: Any) -> Script:
        """Tool calls, after optional content (text the model wrote before its first ``<tool_call>``)."""
        return cls.of(content, tool_calls=tuple(calls), **kwargs)

    @classmethod
    def json(cls, value: object, piece_chars: int = 4, **kwargs: Any) -> Script:
        """Content that is ``value`` as compact JSON, as a ``response_format`` constrained model writes it."""
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        pieces = [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)]
        return cls.of(pieces, **kwargs)

    @classmethod
    def http_error(cls, status: int, message: str = "Injected error") -> Script:
        return cls(http_status=status, error_message=message)

    def but(self, **changes: Any) -> Script:
        return replace(self, **changes)

    @property
    def content(self) -> str:
        return "".join(p.text for p in self.pieces if not p.reasoning)

    @property
    def tool_tokens(self) -> int:
        """Streamed tool-call deltas: one for each name and one for each argument fragment."""
        return sum(1 + len(call.fragments) for call in self.tool_calls)

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.pieces if p.reasoning)

    def stall_before(self, index: int) -> float:
        return sum(s for i, s in self.stalls if i == index)


@dataclass(frozen=True, slots=True)
class Plan:
    """A script cut to the request's ``max_tokens``, with the token counts the usage chunk reports."""

    pieces: tuple[Piece, ...]
    finish_reason: str
    stop_reason: str | int | None
    eos: bool  # a trailing end-of-sequence token carries finish_reason in its own (empty) chunk
    tool_calls: tuple[ToolCallPiece, ...] = ()

    @property
    def completion_tokens(self) -> int:
        tools = sum(1 + len(call.fragments) for call in self.tool_calls)
        return len(self.pieces) + tools + (1 if self.eos else 0)

    @property
    def reasoning_tokens(self) -> int:
        return sum(1 for p in self.pieces if p.reasoning)


def plan(script: Script, max_tokens: int | None, named_tool: bool = False) -> Plan:
    """``named_tool``: the request named its ``tool_choice``, for which vLLM keeps ``stop`` as finish reason."""
    eos = script.finish_reason == "stop" and script.stop_reason is None
    pieces = script.pieces
    total = len(pieces) + script.tool_tokens + (1 if eos else 0)
    if max_tokens is not None and total > max_tokens:
        return Plan(pieces[:max_tokens], "length", None, eos=False)  # cut before any tool call completes
    if script.tool_calls and eos and not named_tool:
        return Plan(pieces, "tool_calls", None, eos=True, tool_calls=script.tool_calls)
    return Plan(pieces, script.finish_reason, script.stop_reason, eos=eos, tool_calls=script.tool_calls)


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per word or punctuation mark."""
    return len(_WORD_RE.findall(text))


def message_text(content: object) -> str:
    """The text of a message's content: a string or an array of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def chat_prompt_tokens(messages: Iterable[object]) -> int:
    """ChatML framing costs 4 tokens a message plus 3 for the assistant prompt, like Qwen3's template."""
    total = 3
    for m in messages:
        if isinstance(m, dict):
            total += 4 + count_tokens(message_text(m.get("content")))
    return total


def last_user_text(messages: Sequence[object]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def script_tag(text: str) -> str | None:
    """The NAME of a ``[[script:NAME]]`` marker in the text, if any."""
    match = _SCRIPT_TAG_RE.search(text)
    return match.group(1) if match else None


def _as_tokens(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        # keep the leading space with each word, as BPE tokens do
        return re.findall(r"\s*\S+|\s+", value)
    return list(value)


__all__ = [
    "Piece",
    "Plan",
    "Script",
    "ToolCallPiece",
    "chat_prompt_tokens",
    "count_tokens",
    "last_user_text",
    "message_text",
    "plan",
    "script_tag",
]

"""Streamed and non-streamed response types: decoded from the engine, re-encoded for the client.

Decoding ignores vLLM's extra fields (``token_ids``, ``prompt_token_ids`` ...). Re-encoding emits only the
OpenAI fields, so that nothing the guardrails masked can leak back through token ids.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType


class Usage(Struct, omit_defaults=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UpFunctionDelta(Struct):
    name: str | None = None
    arguments: str | None = None


class UpToolCallDelta(Struct):
    """A piece of a streamed tool call: the first carries ``id``, ``type`` and ``function.name``, later ones
    ``function.arguments`` fragments; ``index`` tells parallel calls apart."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: UpFunctionDelta | None = None


class UpDelta(Struct):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None  # older vLLM name of ``reasoning``
    tool_calls: list[UpToolCallDelta] | None = None


class UpChoice(Struct):
    index: int = 0
    delta: UpDelta | None = None
    text: str | None = None  # text completions
    finish_reason: str | None = None


class UpChunk(Struct):
    """An engine chunk (chat or text completion), or a mid-stream error event."""

    id: str = ""
    created: int = 0
    model: str = ""
    choices: list[UpChoice] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    error: dict[str, Any] | None = None


class OutFunctionDelta(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class OutToolCallDelta(Struct, omit_defaults=True, kw_only=True):
    """Keys in vLLM's order (id, type, index, function), absent ones omitted, as its ``DeltaToolCall``."""

    id: str | None = None
    type: Literal["function"] | None = None
    index: int
    function: OutFunctionDelta | None = None


class OutDelta(Struct, omit_defaults=True):
    """A streamed delta. ``content`` is omitted when None, except beside ``tool_calls``, where vLLM's hermes tool
    parser sends ``"content": null`` with every tool-call delta."""

    role: str | None = None
    content: str | UnsetType | None = UNSET
    reasoning: str | None = None
    tool_calls: list[OutToolCallDelta] | None = None

    def __post_init__(self) -> None:
        if not self.tool_calls:
            self.tool_calls = None  # vLLM's DeltaMessage drops an empty list
            if self.content is None:
                self.content = UNSET


class OutChatChoice(Struct, omit_defaults=False):
    index: int
    delta: OutDelta
    logprobs: None = None
    finish_reason: str | None = None


class OutTextChoice(Struct, omit_defaults=False):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class OutChunk(Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[OutChatChoice] | list[OutTextChoice]
    usage: Usage | None = None
    menshen: dict[str, Any] | None = None


class OutFunctionCall(Struct):
    name: str
    arguments: str


class OutToolCall(Struct, kw_only=True):
    """A complete tool call in a non-streamed answer (``message.tool_calls``), keys in vLLM's order."""

    id: str
    type: Literal["function"] = "function"
    function: OutFunctionCall


class OutMessage(Struct, omit_defaults=True):
    """A non-streamed message; ``content`` is always sent (null beside tool calls)."""

    role: str
    content: str | None
    reasoning: str | None = None
    tool_calls: list[OutToolCall] | None = None


class OutChatFullChoice(Struct, omit_defaults=False):
    index: int
    message: OutMessage
    logprobs: None = None
    finish_reason: str | None = None


class OutCompletion(Struct, omit_defaults=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[OutChatFullChoice] | list[OutTextChoice]
    usage: Usage | None = None
    menshen: dict[str, Any] | None = None


class ModelCard(Struct, omit_defaults=False):
    """OpenAI's Model object: ``object``, ``created`` and ``owned_by`` are required, so always encoded."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "menshen"
    max_model_len: int | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if self.max_model_len is None:  # unknown: omitted rather than sent as null
            self.max_model_len = UNSET


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"


class UpModelCard(Struct):
    id: str
    created: int = 0
    owned_by: str = "vllm"
    max_model_len: int | None = None


class UpModelList(Struct):
    data: list[UpModelCard] = msgspec.field(default_factory=list)


__all__ = [
    "ModelCard",
    "ModelList",
    "OutChatChoice",
    "OutChatFullChoice",
    "OutChunk",
    "OutCompletion",
    "OutDelta",
    "OutFunctionCall",
    "OutFunctionDelta",
    "OutMessage",
    "OutTextChoice",
    "OutToolCall",
    "OutToolCallDelta",
    "UpChoice",
    "UpChunk",
    "UpDelta",
    "UpFunctionDelta",
    "UpModelCard",
    "UpModelList",
    "UpToolCallDelta",
    "Usage",
]

"""Streamed and non-streamed response types: decoded from the engine, re-encoded for the client.

Decoding ignores vLLM's extra fields (``token_ids``, ``prompt_token_ids`` ...). Re-encoding emits only the
OpenAI fields, so that nothing the guardrails masked can leak back through token ids.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType


class Usage(Struct, omit_defaults=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class UpDelta(Struct):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None  # older vLLM name of ``reasoning``


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


class OutDelta(Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None


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


class OutMessage(Struct, omit_defaults=True):
    role: str
    content: str | None
    reasoning: str | None = None


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
    "OutMessage",
    "OutTextChoice",
    "UpChoice",
    "UpChunk",
    "UpDelta",
    "UpModelCard",
    "UpModelList",
    "Usage",
]

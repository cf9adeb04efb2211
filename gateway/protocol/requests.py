"""The request fields Menshen accepts, and nothing else.

Unknown fields are refused (``forbid_unknown_fields``): vLLM accepts ``chat_template``, ``vllm_xargs`` and
other fields a client must never control, so what goes upstream is re-serialised from these objects, not
forwarded as raw bytes. Unset fields stay UNSET so that they are omitted upstream.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]
# The engine reads these as signed 64-bit integers; larger values must stop here, not fail upstream.
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]
StopSeq = Annotated[str, Meta(max_length=256)]
Stop = StopSeq | Annotated[list[StopSeq], Meta(max_length=16)]


class TextPart(Struct, forbid_unknown_fields=True, tag_field="type", tag="text"):
    text: str


class Message(Struct, forbid_unknown_fields=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | UnsetType = UNSET

    def text(self) -> str:
        """The message's text, parts joined by a newline."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(Struct, forbid_unknown_fields=True, omit_defaults=True):
    include_usage: bool = False


class ChatTemplateKwargs(Struct, forbid_unknown_fields=True, omit_defaults=True):
    enable_thinking: bool | UnsetType = UNSET


class SamplingFields(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Fields common to chat and text completions."""

    model: str
    max_tokens: PositiveInt | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | UnsetType | None = UNSET
    top_k: Annotated[int, Meta(ge=-1, le=INT64_MAX)] | UnsetType | None = UNSET
    min_p: Probability | UnsetType | None = UNSET
    presence_penalty: Penalty | UnsetType | None = UNSET
    frequency_penalty: Penalty | UnsetType | None = UNSET
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=2.0)] | UnsetType | None = UNSET
    stop: Stop | UnsetType | None = UNSET
    seed: Int64 | UnsetType | None = UNSET
    n: Annotated[int, Meta(ge=1, le=1)] | UnsetType = UNSET
    stream: bool = False
    stream_options: StreamOptions | UnsetType | None = UNSET
    user: Annotated[str, Meta(max_length=256)] | UnsetType | None = UNSET

    @property
    def wants_usage(self) -> bool:
        return isinstance(self.stream_options, StreamOptions) and self.stream_options.include_usage

    def requested_max_tokens(self) -> int | None:
        value = self.max_tokens
        return value if isinstance(value, int) else None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | UnsetType | None = UNSET
    chat_template_kwargs: ChatTemplateKwargs | UnsetType | None = UNSET

    def requested_max_tokens(self) -> int | None:
        value = self.max_completion_tokens
        if isinstance(value, int):
            return value
        return super().requested_max_tokens()

    @property
    def thinking(self) -> bool:
        """Qwen3 thinks unless ``chat_template_kwargs.enable_thinking`` is false."""
        kwargs = self.chat_template_kwargs
        if isinstance(kwargs, ChatTemplateKwargs) and isinstance(kwargs.enable_thinking, bool):
            return kwargs.enable_thinking
        return True

    def prompt_text(self) -> list[str]:
        return [m.text() for m in self.messages]


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Annotated[str, Meta(min_length=0)] | Annotated[list[str], Meta(min_length=1, max_length=1)]

    def prompt_text(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


AnyRequest = ChatCompletionRequest | CompletionRequest


def decode_request(body: bytes, kind: type[AnyRequest]) -> AnyRequest:
    """Decode and validate; raises ``msgspec.ValidationError`` / ``msgspec.DecodeError``."""
    return msgspec.json.decode(body, type=kind)


__all__ = [
    "AnyRequest",
    "ChatCompletionRequest",
    "ChatTemplateKwargs",
    "CompletionRequest",
    "Message",
    "SamplingFields",
    "StreamOptions",
    "TextPart",
    "decode_request",
]

"""``/v1/embeddings``: the request Menshen accepts, the engine's answer, and the answer sent to the client.

Only text is accepted: token-id arrays would pass the input guard unread. The client's answer is re-encoded
with OpenAI's fields only (vLLM adds ``id``, ``created`` and null usage details).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from gateway.protocol.scan import GuardText, TextSlot

MAX_INPUTS: Final = 2048  # OpenAI's limit on inputs per request
NOT_TEXT_REFUSED: Final = "`input` must be a string or a list of strings: token-id arrays are refused, since the input guard reads text"
EMPTY_INPUT_REFUSED: Final = "`input` must not be empty, nor contain an empty string"


class EmbeddingRequest(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    model: str
    # Token arrays are decoded (ints, lists of ints) only to be refused with a clear message.
    input: str | Annotated[list[str | int | list[int]], Meta(max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    dimensions: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    user: Annotated[str, Meta(max_length=256)] | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        items = [self.input] if isinstance(self.input, str) else self.input
        if any(not isinstance(item, str) for item in items):
            raise ValueError(NOT_TEXT_REFUSED)
        if not items or any(item == "" for item in items):
            raise ValueError(EMPTY_INPUT_REFUSED)

    def texts(self) -> list[str]:
        """The inputs, in order (checked to be strings when decoded)."""
        return [self.input] if isinstance(self.input, str) else [str(item) for item in self.input]

    def prompt_text(self) -> list[str]:
        return self.texts()

    def text_slots(self) -> list[TextSlot]:
        if isinstance(self.input, str):
            return [TextSlot(GuardText("input", "input", self.input), self._set_single)]
        return [
            TextSlot(GuardText("input", f"input[{i}]", str(item)), self._setter(i))
            for i, item in enumerate(self.input)
        ]

    def _set_single(self, text: str) -> None:
        self.input = text

    def _setter(self, index: int) -> Callable[[str], None]:
        items = self.input
        assert isinstance(items, list)

        def put(text: str) -> None:
            items[index] = text

        return put


class EmbeddingUsage(Struct, omit_defaults=False):
    prompt_tokens: int = 0
    total_tokens: int = 0


class UpEmbedding(Struct):
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 when asked for


class UpEmbeddingResponse(Struct):
    """vLLM's ``EmbeddingResponse``; ``id``, ``created`` and usage details are ignored."""

    data: list[UpEmbedding]
    model: str | None = None
    usage: EmbeddingUsage = msgspec.field(default_factory=EmbeddingUsage)


class Embedding(Struct, omit_defaults=False, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(Struct, omit_defaults=False, kw_only=True):
    """OpenAI's ``CreateEmbeddingResponse``, every field present."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def from_upstream(cls, up: UpEmbeddingResponse, model: str) -> EmbeddingResponse:
        """The client's answer, named after the model the client asked for."""
        data = [Embedding(index=item.index, embedding=item.embedding) for item in up.data]
        return cls(
            data=data, model=model, usage=EmbeddingUsage(up.usage.prompt_tokens, up.usage.total_tokens)
        )


def decode_embedding_request(body: bytes) -> EmbeddingRequest:
    """Decode and validate; raises ``msgspec.ValidationError`` / ``msgspec.DecodeError``."""
    return msgspec.json.decode(body, type=EmbeddingRequest)


__all__ = [
    "EMPTY_INPUT_REFUSED",
    "MAX_INPUTS",
    "NOT_TEXT_REFUSED",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "UpEmbedding",
    "UpEmbeddingResponse",
    "decode_embedding_request",
]

"""The OpenAI routes the relay serves, each described once.

An ``Endpoint`` carries what differs between the generation routes (the policy's endpoint name, the request
type, the engine path, the GenAI operation name, the response objects), so the flow never switches on a kind.
``EMBEDDINGS`` shares only the first three (``Route``): it has no stream and no generation fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.sections import EndpointName
from gateway.protocol import AnyRequest, ChatCompletionRequest, CompletionRequest, EmbeddingRequest


@dataclass(frozen=True, slots=True)
class Route:
    name: EndpointName  # what clients.yaml grants
    route: str  # the gateway's path, also the engine's
    operation: str  # gen_ai.operation.name


@dataclass(frozen=True, slots=True)
class Endpoint(Route):
    request_type: type[AnyRequest]
    chat: bool  # deltas and messages (chat) or text choices (completions)
    chunk_object: str
    full_object: str
    id_prefix: str
    prompt_param: str  # the field that holds the prompt text, named by errors


CHAT = Endpoint(
    name="chat",
    route="/v1/chat/completions",
    operation="chat",
    request_type=ChatCompletionRequest,
    chat=True,
    chunk_object="chat.completion.chunk",
    full_object="chat.completion",
    id_prefix="chatcmpl-",
    prompt_param="messages",
)

COMPLETIONS = Endpoint(
    name="completions",
    route="/v1/completions",
    operation="text_completion",
    request_type=CompletionRequest,
    chat=False,
    chunk_object="text_completion",
    full_object="text_completion",
    id_prefix="cmpl-",
    prompt_param="prompt",
)


@dataclass(frozen=True, slots=True)
class EmbeddingEndpoint(Route):
    request_type: type[EmbeddingRequest]


EMBEDDINGS = EmbeddingEndpoint(
    name="embeddings", route="/v1/embeddings", operation="embeddings", request_type=EmbeddingRequest
)

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "EmbeddingEndpoint", "Endpoint", "Route"]

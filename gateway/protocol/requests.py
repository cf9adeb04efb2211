"""The request fields Menshen accepts, and nothing else.

Unknown fields are refused (``forbid_unknown_fields``): vLLM accepts ``chat_template``, ``vllm_xargs`` and
other fields a client must never control, so what goes upstream is re-serialised from these objects, not
forwarded as raw bytes. Unset fields stay UNSET so that they are omitted upstream.

Rules that span fields are checked in ``__post_init__``: msgspec reports the ``ValueError`` as a
``ValidationError`` with its path, which the gateway answers with a 400 carrying the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from gateway.protocol.scan import GuardText, TextSlot
from gateway.protocol.tools import (
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    FunctionDefinition,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatJsonSchema,
    SchemaFootprint,
    Tool,
    ToolCall,
    ToolChoice,
    decode_schema,
    encoded_size,
    json_depth,
)

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]
# The engine reads these as signed 64-bit integers; larger values must stop here, not fail upstream.
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]
StopSeq = Annotated[str, Meta(max_length=256)]
Stop = StopSeq | Annotated[list[StopSeq], Meta(max_length=16)]

LOGPROBS_REFUSED: Final = (
    "logprobs and top_logprobs are not available through this gateway: token log-probabilities would reveal "
    "text a guardrail masked"
)


class TextPart(Struct, forbid_unknown_fields=True, tag_field="type", tag="text"):
    text: str


class Message(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A chat message. Assistant messages may carry ``tool_calls`` (content may then be null); ``tool`` messages
    answer one call by ``tool_call_id``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | UnsetType = UNSET
    tool_calls: Annotated[list[ToolCall], Meta(min_length=1, max_length=MAX_TOOL_CALLS)] | UnsetType = UNSET
    tool_call_id: Annotated[str, Meta(min_length=1, max_length=256)] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.tool_calls is not UNSET and self.role != "assistant":
            raise ValueError("only assistant messages may carry `tool_calls`")
        if self.role == "tool":
            if self.tool_call_id is UNSET:
                raise ValueError("a tool message needs the `tool_call_id` it answers")
            if self.content is None:
                raise ValueError("a tool message needs `content`")
        elif self.tool_call_id is not UNSET:
            raise ValueError("only tool messages may carry `tool_call_id`")

    def text(self) -> str:
        """The message's text, parts joined by a newline."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def text_slots(self, where: str) -> list[TextSlot]:
        """Content (one slot per text part) then tool-call arguments; ``where`` is this message's path."""
        kind: Literal["message", "tool_result"] = "tool_result" if self.role == "tool" else "message"
        slots: list[TextSlot] = []
        content = self.content
        if isinstance(content, str):
            slots.append(TextSlot(GuardText(kind, f"{where}.content", content), self._set_content))
        elif content is not None:
            for j, part in enumerate(content):
                slots.append(
                    TextSlot(GuardText(kind, f"{where}.content[{j}]", part.text), _setter(part, "text"))
                )
        if not isinstance(self.tool_calls, UnsetType):
            for k, call in enumerate(self.tool_calls):
                at = f"{where}.tool_calls[{k}].function.arguments"
                fn = call.function
                slots.append(
                    TextSlot(GuardText("tool_call_arguments", at, fn.arguments), _setter(fn, "arguments"))
                )
        return slots

    def _set_content(self, text: str) -> None:
        self.content = text


def _setter(obj: object, attr: str) -> Callable[[str], None]:
    def put(text: str) -> None:
        setattr(obj, attr, text)

    return put


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
    # Declared only to be refused with a reason (see ``LOGPROBS_REFUSED``); false or 0 is accepted and dropped.
    logprobs: bool | Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if self.logprobs:
            raise ValueError(LOGPROBS_REFUSED)
        self.logprobs = UNSET

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
    tools: Annotated[list[Tool], Meta(max_length=MAX_TOOLS)] | UnsetType | None = UNSET
    tool_choice: ToolChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType | None = UNSET
    top_logprobs: Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET  # refused like ``logprobs``

    def __post_init__(self) -> None:
        if self.top_logprobs:
            raise ValueError(LOGPROBS_REFUSED)
        self.top_logprobs = UNSET
        super().__post_init__()
        names = [tool.function.name for tool in self.tool_list]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        choice = self.tool_choice
        if choice not in (UNSET, None, "none") and not names:
            raise ValueError("`tool_choice` needs `tools`")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError("`tool_choice` names a function that is not in `tools`")

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

    @property
    def tool_list(self) -> list[Tool]:
        return self.tools if isinstance(self.tools, list) else []

    @property
    def response_schema(self) -> dict[str, object] | None:
        """The ``json_schema`` response format's schema, if any."""
        fmt = self.response_format
        if isinstance(fmt, ResponseFormatJsonSchema) and isinstance(fmt.json_schema.schema, dict):
            return fmt.json_schema.schema
        return None

    def prompt_text(self) -> list[str]:
        """What the chat template renders, for token estimation: each message's text, then what tools add
        (tool-call arguments and the tool definitions, which the template writes into the system prompt)."""
        texts = [m.text() for m in self.messages]
        for m in self.messages:
            if isinstance(m.tool_calls, list):
                texts.extend(call.function.arguments for call in m.tool_calls)
        if self.tool_list:
            texts.append(msgspec.json.encode(self.tool_list).decode())
        return texts

    def text_slots(self) -> list[TextSlot]:
        slots: list[TextSlot] = []
        for i, message in enumerate(self.messages):
            slots.extend(message.text_slots(f"messages[{i}]"))
        for i, tool in enumerate(self.tool_list):
            fn, at = tool.function, f"tools[{i}].function"
            if isinstance(fn.description, str):
                text = GuardText("tool_description", f"{at}.description", fn.description)
                slots.append(TextSlot(text, _setter(fn, "description")))
            if isinstance(fn.parameters, dict):
                text = GuardText(
                    "tool_parameters", f"{at}.parameters", msgspec.json.encode(fn.parameters).decode()
                )
                slots.append(TextSlot(text, _schema_setter(fn)))
        return slots

    def schema_footprint(self) -> SchemaFootprint:
        """Encoded size and depth of the tool definitions and of the ``response_format`` schema."""
        tools, schema = self.tool_list, self.response_schema
        return SchemaFootprint(
            tools_bytes=encoded_size(tools) if tools else 0,
            tools_depth=max((json_depth(t.function.parameters) for t in tools), default=0),
            response_schema_bytes=encoded_size(schema) if schema is not None else 0,
            response_schema_depth=json_depth(schema) if schema is not None else 0,
        )


def _schema_setter(fn: FunctionDefinition) -> Callable[[str], None]:
    def put(text: str) -> None:
        fn.parameters = decode_schema(text)

    return put


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Annotated[str, Meta(min_length=0)] | Annotated[list[str], Meta(min_length=1, max_length=1)]

    def prompt_text(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def text_slots(self) -> list[TextSlot]:
        return [TextSlot(GuardText("prompt", "prompt", self.prompt_text()[0]), self._set_prompt)]

    def _set_prompt(self, text: str) -> None:
        self.prompt = text if isinstance(self.prompt, str) else [text]


AnyRequest = ChatCompletionRequest | CompletionRequest


def decode_request(body: bytes, kind: type[AnyRequest]) -> AnyRequest:
    """Decode and validate; raises ``msgspec.ValidationError`` / ``msgspec.DecodeError``."""
    return msgspec.json.decode(body, type=kind)


__all__ = [
    "LOGPROBS_REFUSED",
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

"""The policy's bounds on what a request asks of tools and structured output, checked right after decode.

A schema costs engine time before the first token (vLLM compiles it into a grammar), so the number of tools,
the bytes of their definitions and of the ``response_format`` schema, and their nesting depth are bounded by
``generation.yaml`` (400 ``tools_limit``). A client refused tools, or limited to some tool names, gets 403
naming the first tool it may not use.
"""

from __future__ import annotations

from gateway.auth import Grant
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.policy.sections import GenerationSection
from gateway.protocol import AnyRequest, ChatCompletionRequest

LIMIT_CODE = "tools_limit"


def check_tool_request(request: AnyRequest, generation: GenerationSection, grant: Grant) -> None:
    """Raise ``PermissionDenied`` for a tool the grant refuses, ``InvalidRequest`` past a policy bound."""
    if not isinstance(request, ChatCompletionRequest):
        return
    tools = request.tool_list
    for index, tool in enumerate(tools):
        if not grant.allows_tool(tool.function.name):
            raise PermissionDenied(
                f"This client may not use the tool '{tool.function.name}'.", param=f"tools[{index}]"
            )
    if len(tools) > generation.max_tools:
        raise InvalidRequest(
            f"The request defines {len(tools)} tools; this deployment allows at most {generation.max_tools}.",
            param="tools",
            code=LIMIT_CODE,
        )
    if not tools and request.response_schema is None:
        return
    footprint = request.schema_footprint()
    bounds = (
        ("tools", "tool definitions", footprint.tools_bytes, generation.max_tool_schema_bytes),
        (
            "response_format",
            "response schema",
            footprint.response_schema_bytes,
            generation.max_response_schema_bytes,
        ),
    )
    for param, what, size, limit in bounds:
        if size > limit:
            raise InvalidRequest(
                f"The {what} take {size} bytes; this deployment allows at most {limit}.",
                param=param,
                code=LIMIT_CODE,
            )
    depths = (("tools", footprint.tools_depth), ("response_format", footprint.response_schema_depth))
    for param, depth in depths:
        if depth > generation.max_schema_depth:
            raise InvalidRequest(
                f"A schema in `{param}` nests {depth} levels deep; this deployment allows at most "
                f"{generation.max_schema_depth}.",
                param=param,
                code=LIMIT_CODE,
            )


__all__ = ["LIMIT_CODE", "check_tool_request"]

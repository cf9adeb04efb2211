"""Reassembly of streamed tool-call deltas into complete calls, for answers the client asked not to stream."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.protocol.chunks import OutFunctionCall, OutToolCall, UpToolCallDelta


class ToolCallAssembler:
    """Collects ``delta.tool_calls`` pieces by ``index``: the first piece of a call names it, the others append
    argument fragments."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def add(self, deltas: Iterable[UpToolCallDelta]) -> None:
        for delta in deltas:
            call_id, name, arguments = self._calls.get(delta.index, ("", "", []))
            fn = delta.function
            if fn is not None:
                name = fn.name or name
                if fn.arguments:
                    arguments.append(fn.arguments)
            self._calls[delta.index] = (delta.id or call_id, name, arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[OutToolCall]:
        """The complete calls, by increasing index."""
        return [
            OutToolCall(id=call_id, function=OutFunctionCall(name, "".join(arguments)))
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        ]


__all__ = ["ToolCallAssembler"]

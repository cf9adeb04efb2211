"""A ``send`` wrapper that remembers the response status, shared by the access log and the server span."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]


class StatusSend:
    """Calls ``send`` and keeps the status of ``http.response.start`` (0 until a response starts).

    It hands back send's awaitable instead of being a coroutine itself: no extra coroutine per streamed chunk.
    """

    __slots__ = ("send", "status")

    def __init__(self, send: Callable[[Any], Awaitable[None]]) -> None:
        self.send = send
        self.status = 0

    def __call__(self, message: Any) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        return self.send(message)


__all__ = ["StatusSend"]

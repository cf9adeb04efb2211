"""ASGI plumbing shared by the access log and the server span: types, scope-state keys, a status-keeping send."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Keys in the scope's ``state`` (Litestar's place for per-request values).
ACCESS_LOGGED: Final = "menshen.access_logged"  # the request flow wrote the access line itself
TRACE_ID: Final = "menshen.trace_id"  # the trace id as an int, for the access line
RESPONSE: Final = "menshen.response"  # the StatusSend that sees the response status


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


__all__ = [
    "ACCESS_LOGGED",
    "RESPONSE",
    "TRACE_ID",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "StatusSend",
]

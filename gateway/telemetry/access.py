"""One access-log line for every HTTP request, whichever part of the app answered it.

The request flow writes the richest line itself (client, finish reason, 499 on a disconnect) through the
recorder and marks the scope's ``state`` (Litestar's place for per-request values) with ``ACCESS_LOGGED``. Everything else — the token endpoint, discovery,
unknown paths (404), wrong methods (405), bodies refused before a handler ran — gets its line here, from
outside the whole app, so no answer goes unlogged. Probes and scrapes are not logged (``EXCLUDED_PATHS``).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.telemetry.asgi import (
    ACCESS_LOGGED,
    RESPONSE,
    TRACE_ID,
    ASGIApp,
    Receive,
    Scope,
    Send,
    StatusSend,
)
from gateway.telemetry.logging import log_access
from gateway.telemetry.spans import EXCLUDED_PATHS


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, skip_paths: tuple[str, ...] = EXCLUDED_PATHS) -> None:
        self.app = app
        self._skip = frozenset(skip_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._skip:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        send_with_status = state[RESPONSE] = StatusSend(send)
        failed = False
        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            failed = True  # the server answers 500 for an app that raised
            raise
        finally:
            # It holds the server's send, which holds the scope: left in the scope, that cycle would keep
            # the request's objects for the garbage collector instead of freeing them now.
            state.pop(RESPONSE, None)
            if not state.get(ACCESS_LOGGED):
                log_access(
                    method=scope["method"],
                    path=scope["path"],
                    # no response started: the app failed (500) or the client went away first (499)
                    status=send_with_status.status or (500 if failed else 499),
                    duration_ms=(time.perf_counter() - started) * 1000,
                    trace_id=format(trace_id, "032x") if (trace_id := state.get(TRACE_ID)) else None,
                )


__all__ = ["ACCESS_LOGGED", "RESPONSE", "TRACE_ID", "AccessLogMiddleware"]

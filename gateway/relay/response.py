"""ASGI responses for the relay: an SSE stream that always releases its resources.

Litestar's streaming response cancels the sender when the client sends ``http.disconnect``. A cancelled
generator may be left suspended; this response closes it explicitly, shielded from the cancellation, so
the upstream connection is closed (vLLM aborts) and slots are freed within the same event-loop turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from anyio import CancelScope
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Send

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class SSEResponse(ASGIStreamingResponse):
    def __init__(self, iterator: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        super().__init__(
            iterator=iterator,
            headers={**SSE_HEADERS, **headers},
            media_type="text/event-stream",  # Litestar adds the charset
            status_code=200,
        )
        self._generator = iterator

    async def _stream(self, send: Send) -> None:
        try:
            await super()._stream(send)
        finally:
            with CancelScope(shield=True):
                await self._generator.aclose()


__all__ = ["SSEResponse"]

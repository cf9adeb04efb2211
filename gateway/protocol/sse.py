"""Server-sent events framing, as vLLM and OpenAI use it: ``data: <json>\\n\\n`` and ``data: [DONE]``."""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class SSEDecoder:
    """Splits a byte stream into the ``data`` payloads of its events, across arbitrary read boundaries."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\n\n" not in buf and b"\r\n\r\n" not in buf:
            self._buf = buf
            return []
        buf = buf.replace(b"\r\n", b"\n")
        *events, self._buf = buf.split(b"\n\n")
        out: list[bytes] = []
        for event in events:
            payload = _event_data(event)
            if payload is not None:
                out.append(payload)
        return out

    @property
    def pending(self) -> bool:
        return bool(self._buf.strip())


def _event_data(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


__all__ = ["DONE", "SSEDecoder", "frame"]

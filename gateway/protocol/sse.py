"""Server-sent events framing, as vLLM and OpenAI use it: ``data: <json>\\n\\n`` and ``data: [DONE]``."""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class SSEDecoder:
    """Splits a byte stream into the ``data`` payloads of its events, across arbitrary read boundaries.

    Line endings (CRLF, CR, LF) are normalised as the bytes arrive. A read ending in CR ends its line at once;
    an LF opening the next read is then the second half of that CRLF and is dropped, not counted again.
    """

    __slots__ = ("_after_cr", "_buf")

    def __init__(self) -> None:
        self._buf = b""
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._after_cr and data:
            self._after_cr = False
            if data.startswith(b"\n"):
                data = data[1:]
        if data.endswith(b"\r"):
            self._after_cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + data if self._buf else data
        if b"\n\n" not in buf:
            self._buf = buf
            return []
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

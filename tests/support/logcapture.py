"""Captured logs of a gateway running in threads: raw records and the rendered (scrubbed) JSON lines."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog

# The loggers `configure_logging` re-wires besides the root logger.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "litestar")


@contextmanager
def saved_logging() -> Iterator[None]:
    """Restore the process-wide logging set-up that ``configure_logging`` changes."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_libs = [
        (lib, list(lib.handlers), lib.level, lib.propagate)
        for lib in map(logging.getLogger, _LIBRARY_LOGGERS)
    ]
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for lib, handlers, level, propagate in saved_libs:
            lib.handlers[:] = handlers
            lib.setLevel(level)
            lib.propagate = propagate
        structlog.reset_defaults()


class RawCapture(logging.Handler):
    """Unscrubbed records of the gateway and fake engine threads (the test's own client excluded)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName != threading.main_thread().name:
            # Both the template with its raw arguments and the formatted message: a secret hides in either.
            self.lines.append(
                f"{record.name} {record.msg!r} {record.args!r} {record.getMessage()} {record.exc_text or ''}"
            )


@dataclass
class Logs:
    raw: RawCapture
    rendered: io.StringIO

    def text(self) -> str:
        return "\n".join(self.raw.lines) + "\n" + self.rendered.getvalue()

    def access(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.rendered.getvalue().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "menshen.access"]


__all__ = ["Logs", "RawCapture", "saved_logging"]

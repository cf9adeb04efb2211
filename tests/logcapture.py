"""Captured logs of a gateway running in threads: raw records and the rendered (scrubbed) JSON lines."""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any


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


__all__ = ["Logs", "RawCapture"]

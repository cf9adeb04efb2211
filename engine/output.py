"""The engine's own output: kept in a log file in the data dir, never on the terminal.

vLLM prints a hundred-odd lines while it starts (its route list, deprecation warnings, progress bars);
the terminal shows the supervisor's summary instead, and the last lines of this file when a start fails.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import os
from pathlib import Path
from typing import IO

_HIDDEN = "[internal key]"


class EngineOutput:
    """Appends engine output lines to ``path``, keeps the last ``tail_lines``, never writes ``secret``.

    ``open()`` rotates: the previous run's file is kept as ``NAME.log.1`` and the new run starts an
    empty file. Restarts within one run append to it, each start marked by a header line.
    """

    def __init__(self, path: Path, secret: str, tail_lines: int = 30) -> None:
        self.path = path
        self._secret = secret
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        # Line-buffered, so that `tail -f` shows vLLM's progress as it happens.
        self._file = self.path.open("a", encoding="utf-8", buffering=1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def begin(self, what: str) -> None:
        """Mark the start of a new process in the file; the tail then holds only its lines."""
        self._tail.clear()
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._write_file(f"=== {stamp} {what}")

    def write(self, line: str) -> None:
        line = line.replace(self._secret, _HIDDEN)
        self._tail.append(line)
        self._write_file(line)

    def tail(self) -> tuple[str, ...]:
        return tuple(self._tail)

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Copy ``stream`` line by line until end of file."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the limit was dropped by the reader
                continue
            if not raw:
                return
            # Progress bars redraw with carriage returns; keep the final state of the line.
            line = raw.decode("utf-8", "replace").rstrip().rsplit("\r", 1)[-1]
            if line:
                self.write(line)

    def _write_file(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text + "\n")


__all__ = ["EngineOutput"]

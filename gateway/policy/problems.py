"""Problems found in a policy bundle, always with the file and line they come from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class PolicyError:
    """One problem: ``file`` is relative to the bundle directory, ``line`` is 1-based."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "message": self.message}


class PolicyLoadError(Exception):
    """A bundle failed validation; ``errors`` holds every problem found, sorted by file and line."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors: tuple[PolicyError, ...] = tuple(sorted(errors))
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"invalid policy bundle ({len(self.errors)} errors):\n{lines}")


__all__ = ["PolicyError", "PolicyLoadError"]

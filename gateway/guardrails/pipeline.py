"""The stream pipeline: a chain of small checks that see every streamed delta.

Each check sees the text of one delta field (``content``, ``reasoning`` or ``tool_arguments``, the arguments
of one tool call at a time: ``finish`` ends one call's and the next call starts fresh) and returns what may be
released now: the same text (pass), a rewritten text (mask), less text (hold back a tail that may
still become a match), or a stop with a finish reason. Checks are chained in order: what one check
releases is what the next one sees. State is per stream and per field; nothing here is per request
work done per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

DeltaField = Literal["content", "reasoning", "tool_arguments"]
# The policy's ``where`` of each field: content is the answer (``output``), the others are named as they are.
FIELD_PLACE: dict[DeltaField, str] = {
    "content": "output",
    "reasoning": "reasoning",
    "tool_arguments": "tool_arguments",
}


@dataclass(slots=True, frozen=True)
class Decision:
    """One guardrail or loop decision, for span events, metrics and the audit trail.

    ``matched`` is the matched text, used only to compute the audit HMAC. It is excluded from
    ``repr`` and must never be logged, traced or stored.
    """

    rule: str
    category: str
    action: str
    mode: str
    where: str
    start: int
    end: int
    matched: str = field(default="", repr=False, compare=False)
    detail: tuple[tuple[str, int | float | str], ...] = ()

    def to_json(self) -> dict[str, object]:
        """What ``gateway policy test`` prints: never the matched text."""
        return {
            "rule": self.rule,
            "category": self.category,
            "action": self.action,
            "start": self.start,
            "end": self.end,
            "mode": self.mode,
        }


@dataclass(slots=True, frozen=True)
class Stop:
    """End the stream now with ``finish_reason``; ``extension`` goes under the ``menshen`` key."""

    finish_reason: str
    extension: dict[str, object]


@dataclass(slots=True)
class CheckResult:
    text: str
    stop: Stop | None = None
    decisions: list[Decision] | None = None


class StreamCheck(Protocol):
    """One check on a stream. Implementations keep their own per-field state."""

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        """See new text of ``where``; return what may be released now."""
        ...

    def finish(self, where: DeltaField) -> CheckResult:
        """The field's text is complete: release anything held back, after a final check."""
        ...


class PassThrough:
    """The default check: releases everything as it comes."""

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        return CheckResult(text)

    def finish(self, where: DeltaField) -> CheckResult:
        return CheckResult("")


class StreamPipeline:
    """Runs checks in order over each delta; the first stop wins and ends the stream."""

    __slots__ = ("_checks", "decisions", "stopped")

    def __init__(self, checks: list[StreamCheck]) -> None:
        self._checks = checks
        self.decisions: list[Decision] = []
        self.stopped: Stop | None = None

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        return self._run(where, text, 0)

    def finish(self, where: DeltaField) -> CheckResult:
        """Flush each check in order: what check i releases at the end is fed to check i+1."""
        released: list[str] = []
        for i, check in enumerate(self._checks):
            if self.stopped is not None:
                break
            result = check.finish(where)
            self._note(result)
            if result.stop is not None:
                # text before the stop point is final (e.g. what preceded a blocked word), as in ``feed``
                released.append(result.text)
                self.stopped = result.stop
                break
            if result.text:
                released.append(self._run(where, result.text, i + 1).text)
        return CheckResult("".join(released), self.stopped)

    def _run(self, where: DeltaField, text: str, start: int) -> CheckResult:
        checks = self._checks
        for i in range(start, len(checks)):
            if self.stopped is not None:
                return CheckResult("", self.stopped)
            result = checks[i].feed(where, text)
            self._note(result)
            if result.stop is not None:
                self.stopped = result.stop
                return CheckResult(result.text, result.stop)
            text = result.text
            if not text:
                return CheckResult("")
        return CheckResult(text)

    def _note(self, result: CheckResult) -> None:
        if result.decisions:
            self.decisions.extend(result.decisions)


__all__ = [
    "FIELD_PLACE",
    "CheckResult",
    "Decision",
    "DeltaField",
    "PassThrough",
    "Stop",
    "StreamCheck",
    "StreamPipeline",
]

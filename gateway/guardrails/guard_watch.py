"""Guard models on a stream in ``watch`` mode: text flows at once and is judged in the background.

At checkpoints (every ``checkpoint_chars`` new characters, at a sentence end once a quarter of that is new,
and at the end) the prompt plus the field's text so far goes to the guard, one call in flight per rule and
field. An enforced block cuts the stream with ``content_filter`` at the next chunk; ``settle`` (awaited by the
relay before the engine's finish chunk is transcoded, and before the end) judges what is left, so a blocked
answer never ends with ``stop``. What was released before a verdict arrives stays with the client: up to one
checkpoint of text, plus what streams while the guard answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.guardrails.guard_http import GuardInput
from gateway.guardrails.guards import Guard, GuardSet
from gateway.guardrails.pipeline import FIELD_PLACE, CheckResult, Decision, DeltaField, Stop

_SENTENCE_ENDS = frozenset(".!?。！？\n")


@dataclass(slots=True)
class _Watched:
    """One rule on one field: the text so far, how much a launched checkpoint covers, the call in flight."""

    guard: Guard
    mode: str
    place: str
    parts: list[str] = field(default_factory=list)
    size: int = 0
    covered: int = 0
    task: asyncio.Task[Decision | None] | None = None


class GuardWatch:
    """A `StreamCheck` that never holds text; verdicts arrive in the background (see the module doc)."""

    __slots__ = ("_client", "_decisions", "_fields", "_prompt", "_stop")

    def __init__(self, watched: dict[DeltaField, list[_Watched]], prompt: str, client: str | None) -> None:
        self._fields = watched
        self._prompt = prompt
        self._client = client
        self._decisions: list[Decision] = []
        self._stop: Stop | None = None

    @property
    def busy(self) -> bool:
        """True while some text is not judged yet (a call in flight or text past the last checkpoint)."""
        return any(w.task is not None or w.size > w.covered for ws in self._fields.values() for w in ws)

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        for w in self._fields.get(where, ()):
            w.parts.append(text)
            w.size += len(text)
            self._harvest(w)
            new = w.size - w.covered
            step = w.guard.rule.checkpoint_chars
            if w.task is None and (new >= step or (new >= step // 4 and text[-1:] in _SENTENCE_ENDS)):
                self._launch(w)
        return self._result(text)

    def finish(self, where: DeltaField) -> CheckResult:
        for w in self._fields.get(where, ()):
            self._harvest(w)
        return self._result("")

    async def settle(self) -> None:
        """Judge everything fed so far and wait for every verdict (the final checkpoint)."""
        for ws in self._fields.values():
            for w in ws:
                for _ in range(2):  # the call in flight, then one covering the rest
                    if w.task is not None:
                        await asyncio.wait([w.task])
                        self._harvest(w)
                    if w.size > w.covered and self._stop is None:
                        self._launch(w)

    def cancel(self) -> None:
        for ws in self._fields.values():
            for w in ws:
                if w.task is not None:
                    w.task.cancel()

    def _launch(self, w: _Watched) -> None:
        text = "".join(w.parts)
        w.parts = [text]
        w.covered = w.size
        item = GuardInput(text, w.place, self._client, self._prompt)
        w.task = asyncio.create_task(w.guard.judge(item, w.mode))

    def _harvest(self, w: _Watched) -> None:
        task = w.task
        if task is None or not task.done():
            return
        w.task = None
        decision = task.result()  # judge never raises for a guard failure (on_error makes a decision)
        if decision is None:
            return
        self._decisions.append(decision)
        if self._stop is None and decision.action == "block" and decision.mode == "enforce":
            extension: dict[str, object] = {
                "stopped": "content_filter",
                "rule": decision.rule,
                "category": decision.category,
                "where": decision.where,
            }
            self._stop = Stop("content_filter", extension)

    def _result(self, text: str) -> CheckResult:
        decisions, self._decisions = self._decisions or None, []
        if self._stop is not None:
            return CheckResult("", self._stop, decisions)
        return CheckResult(text, None, decisions)


def guard_watch(guards: GuardSet, client: str | None, prompt: str) -> GuardWatch | None:
    """The watch check of one stream, or None when no guard rule watches this client's output."""
    watched: dict[DeltaField, list[_Watched]] = {}
    for name, place in FIELD_PLACE.items():
        found = [
            _Watched(g, mode, place)
            for g, mode in guards.active(client, place)
            if g.rule.stream_mode == "watch"
        ]
        if found:
            watched[name] = found
    return GuardWatch(watched, prompt, client) if watched else None


__all__ = ["GuardWatch", "guard_watch"]

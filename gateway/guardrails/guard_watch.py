"""Guard models on a stream: ``watch`` (text flows, judged in the background) or ``hold`` (text released
once judged Safe).

At checkpoints (every ``checkpoint_chars`` new characters, at a sentence end once a quarter of that is new,
and at the end) the prompt plus the field's text so far goes to the guard, one call in flight per rule and
field. An enforced block cuts the stream with ``content_filter`` at the next chunk. ``settle`` (awaited by the
relay before the engine's finish chunk is transcoded, and before the end) judges what is left, so a blocked
answer never ends with ``stop`` and held text is released at the end.

watch: no added latency; what was released before a verdict arrives stays with the client (up to one
checkpoint of text, plus what streams while the guard answers).
hold: nothing unjudged reaches the client; text waits for its checkpoint's verdict, and is released at the
first chunk after a Safe verdict (or at the end).
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
    """One rule on one field: how far a launched checkpoint and a Safe verdict reach, the call in flight."""

    guard: Guard
    mode: str
    hold: bool
    covered: int = 0
    safe: int = 0
    task: asyncio.Task[Decision | None] | None = None
    task_covers: int = 0


@dataclass(slots=True)
class _Field:
    place: str
    watched: list[_Watched]
    parts: list[str] = field(default_factory=list)
    size: int = 0
    released: int = 0
    holding: bool = False  # some rule holds this field: text goes out only as far as Safe verdicts reach

    def text(self) -> str:
        joined = "".join(self.parts)
        self.parts = [joined]
        return joined

    def release_point(self) -> int:
        return min((w.safe for w in self.watched if w.hold), default=self.size)


class GuardWatch:
    """A `StreamCheck` whose verdicts arrive in the background (see the module doc)."""

    __slots__ = ("_client", "_decisions", "_fields", "_prompt", "_stop")

    def __init__(self, fields: dict[DeltaField, _Field], prompt: str, client: str | None) -> None:
        self._fields = fields
        self._prompt = prompt
        self._client = client
        self._decisions: list[Decision] = []
        self._stop: Stop | None = None

    @property
    def busy(self) -> bool:
        """True while some text is not judged yet (a call in flight or text past the last checkpoint)."""
        return any(w.task is not None or f.size > w.covered for f in self._fields.values() for w in f.watched)

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        f = self._fields.get(where)
        if f is None:
            return self._result(text)
        f.parts.append(text)
        f.size += len(text)
        for w in f.watched:
            self._harvest(w)
            new = f.size - w.covered
            step = w.guard.rule.checkpoint_chars
            if w.task is None and (new >= step or (new >= step // 4 and text[-1:] in _SENTENCE_ENDS)):
                self._launch(f, w)
        return self._result(self._release(f) if f.holding else text)

    def finish(self, where: DeltaField) -> CheckResult:
        f = self._fields.get(where)
        if f is None:
            return self._result("")
        for w in f.watched:
            self._harvest(w)
        return self._result(self._release(f) if f.holding else "")

    async def settle(self) -> None:
        """Judge everything fed so far and wait for every verdict (the final checkpoint)."""
        for f in self._fields.values():
            for w in f.watched:
                for _ in range(2):  # the call in flight, then one covering the rest
                    if w.task is not None:
                        await asyncio.wait([w.task])
                        self._harvest(w)
                    if f.size > w.covered and self._stop is None:
                        self._launch(f, w)

    def cancel(self) -> None:
        for f in self._fields.values():
            for w in f.watched:
                if w.task is not None:
                    w.task.cancel()

    def _launch(self, f: _Field, w: _Watched) -> None:
        w.covered = w.task_covers = f.size
        item = GuardInput(f.text(), f.place, self._client, self._prompt)
        w.task = asyncio.create_task(w.guard.judge(item, w.mode))

    def _harvest(self, w: _Watched) -> None:
        task = w.task
        if task is None or not task.done():
            return
        w.task = None
        decision = task.result()  # judge never raises for a guard failure (on_error makes a decision)
        if decision is not None:
            self._decisions.append(decision)
            if decision.action == "block" and decision.mode == "enforce":
                if self._stop is None:
                    extension: dict[str, object] = {
                        "stopped": "content_filter",
                        "rule": decision.rule,
                        "category": decision.category,
                        "where": decision.where,
                    }
                    self._stop = Stop("content_filter", extension)
                return
        w.safe = w.task_covers

    def _release(self, f: _Field) -> str:
        point = f.release_point()
        if point <= f.released or self._stop is not None:
            return ""
        text = f.text()[f.released : point]
        f.released = point
        return text

    def _result(self, text: str) -> CheckResult:
        decisions, self._decisions = self._decisions or None, []
        if self._stop is not None:
            return CheckResult("", self._stop, decisions)
        return CheckResult(text, None, decisions)


def guard_watch(guards: GuardSet, client: str | None, prompt: str) -> GuardWatch | None:
    """The stream check of one stream, or None when no guard rule judges this client's output."""
    fields: dict[DeltaField, _Field] = {}
    for name, place in FIELD_PLACE.items():
        found = [_Watched(g, mode, g.rule.stream_mode == "hold") for g, mode in guards.active(client, place)]
        if found:
            fields[name] = _Field(place, found, holding=any(w.hold for w in found))
    return GuardWatch(fields, prompt, client) if fields else None


__all__ = ["GuardWatch", "guard_watch"]

"""The loop detector as a stream check, and the policy helpers the request flow uses around it.

``LoopCheck`` keeps one ``LoopDetector`` per field (content, reasoning, the current tool call's arguments). On a loop in enforce
mode it releases the chunk's text up to where the loop became certain and stops the stream with
``finish_reason: "length"`` and a ``menshen`` extension naming the cause and the kind of loop
(``exact``, ``near_dup`` or ``similar``). In shadow mode it records
the decision once and relays everything.
"""

from __future__ import annotations

from gateway.guardrails.loops import LoopDetector, LoopHit
from gateway.guardrails.pipeline import FIELD_PLACE, CheckResult, Decision, DeltaField, Stop
from gateway.policy.sections import LoopOverride, LoopsSection, PolicyBundle

LOOP_STOP_REASON = "repetition_loop"  # value of ``menshen.stopped`` in the final chunk
LOOP_CATEGORY = "loop"


def effective_loops(section: LoopsSection, override: LoopOverride | None) -> LoopsSection:
    """The bundle's loop settings with a client's override applied (unset fields keep the bundle's)."""
    if override is None:
        return section
    update = override.model_dump(exclude_none=True)
    return section.model_copy(update=update) if update else section


def repetition_detection_params(section: LoopsSection) -> dict[str, int] | None:
    """vLLM's per-request ``repetition_detection`` body field, or None when the backstop is off."""
    backstop = section.engine_backstop
    if backstop is None or not section.enabled:
        return None
    return {
        "max_pattern_size": backstop.max_pattern_size,
        "min_pattern_size": backstop.min_pattern_size,
        "min_count": backstop.min_count,
    }


def loop_stop(section: LoopsSection, hit: LoopHit, where: str) -> Stop:
    """The stop that ends a looping stream; also usable for an engine ``repetition`` finish."""
    return Stop(
        "length",
        {
            "stopped": LOOP_STOP_REASON,
            "rule": section.rule_id,
            "where": where,
            "period": hit.period,
            "repeats": hit.repeats,
            "offset": hit.offset,
            "kind": hit.kind,
        },
    )


def engine_repetition_stop(section: LoopsSection) -> Stop:
    """The stop for vLLM's own ``finish_reason: "repetition"`` (the engine backstop fired)."""
    return Stop("length", {"stopped": LOOP_STOP_REASON, "rule": section.rule_id, "source": "engine"})


def loop_decision(section: LoopsSection, hit: LoopHit, where: str) -> Decision:
    """The recorded event: rule, period, repeats and offsets, never the text."""
    return Decision(
        rule=section.rule_id,
        category=LOOP_CATEGORY,
        action="block",
        mode=section.mode,
        where=where,
        start=hit.start,
        end=hit.offset,
        detail=(
            ("period", hit.period),
            ("repeats", hit.repeats),
            ("offset", hit.offset),
            ("kind", hit.kind),
            ("period_lines", hit.period_lines),
            ("similarity", hit.similarity),
        ),
    )


class LoopCheck:
    """A ``StreamCheck`` that cuts repetition loops; one per stream. Each tool call's arguments get a detector
    of their own (``finish("tool_arguments")`` ends one call): a model that calls the same function again and
    again is bounded by ``generation.max_tool_calls``, not by this check."""

    __slots__ = ("_detectors", "_section")

    def __init__(self, section: LoopsSection) -> None:
        self._section = section
        self._detectors: dict[DeltaField, LoopDetector | None] = {}
        if section.enabled:
            for where, label in FIELD_PLACE.items():
                self._detectors[where] = LoopDetector(section) if label in section.where else None

    def feed(self, where: DeltaField, text: str) -> CheckResult:
        detector = self._detectors.get(where)
        if detector is None:
            return CheckResult(text)
        before = detector.consumed
        hit = detector.feed(text)
        if hit is None:
            return CheckResult(text)
        return self._on_hit(where, hit, text, before)

    def finish(self, where: DeltaField) -> CheckResult:
        detector = self._detectors.get(where)
        hit = detector.finish() if detector is not None else None
        if detector is not None and where == "tool_arguments":
            self._detectors[where] = LoopDetector(self._section)  # the next call starts fresh
        if detector is None or hit is None:
            return CheckResult("")
        return self._on_hit(where, hit, "", detector.consumed)  # all text was released already

    def _on_hit(self, where: DeltaField, hit: LoopHit, text: str, before: int) -> CheckResult:
        label = FIELD_PLACE[where]
        decision = loop_decision(self._section, hit, label)
        if self._section.mode == "shadow":
            self._detectors.clear()  # recorded once per stream; relay the rest untouched
            return CheckResult(text, decisions=[decision])
        keep = min(len(text), max(0, hit.offset - before))
        return CheckResult(text[:keep], stop=loop_stop(self._section, hit, label), decisions=[decision])


def loop_check_for(bundle: PolicyBundle, client_id: str) -> LoopCheck | None:
    """The loop check for one stream of ``client_id``, or None when loops are off for it."""
    client = bundle.clients.clients.get(client_id)
    section = effective_loops(bundle.loops, client.loops if client is not None else None)
    if not section.enabled or not section.where:
        return None
    return LoopCheck(section)


__all__ = [
    "LOOP_CATEGORY",
    "LOOP_STOP_REASON",
    "LoopCheck",
    "effective_loops",
    "engine_repetition_stop",
    "loop_check_for",
    "loop_decision",
    "loop_stop",
    "repetition_detection_params",
]

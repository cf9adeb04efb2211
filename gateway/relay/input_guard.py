"""Step 5, the input guard: every text of the request scanned before the engine is called.

The texts are the ones the wire types list (``gateway.protocol.guard_texts``): message contents, tool results,
assistant tool-call arguments, tool descriptions and parameter schemas, completion prompts. A block ends the
request with 400 ``content_filter`` naming the rule and, as ``param``, where the text sits. A mask rewrites the
text in the request itself, so the one upstream body built afterwards carries the masked text; a mask that
would break a tool's JSON parameter schema acts as a block. The scan's decisions go to the record as they
are, and to the span as events (rule and offsets, never the text).
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import ContentFiltered
from gateway.guardrails.pipeline import Decision
from gateway.policy.store import PolicySnapshot
from gateway.protocol import apply_guard_texts, guard_texts
from gateway.protocol.scan import HasTexts
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.spans import SPAN_INPUT_GUARD, add_decision_event, phase


class Guarded(Protocol):
    """What the guard reads of an admitted request (completions and embeddings alike)."""

    @property
    def snapshot(self) -> PolicySnapshot: ...
    @property
    def request(self) -> HasTexts: ...
    @property
    def client_id(self) -> str: ...


def guard_input(admitted: Guarded, record: RequestRecord) -> None:
    """Scan the request's texts; raise ``ContentFiltered`` on a block, mask the request in place on a mask."""
    guard = admitted.snapshot.guardrails
    request = admitted.request
    with phase(SPAN_INPUT_GUARD) as span:
        slots = guard_texts(request)
        texts = [slot.text for slot in slots]
        masked_by: Decision | None = None
        for index, slot in enumerate(slots):
            if not slot.text:
                continue
            verdict = guard.scan(slot.text, "input", admitted.client_id)
            for decision in verdict.hits:
                record.decisions.append(decision)
                add_decision_event(span, decision)
            blocking = verdict.blocking()
            if blocking is not None:
                raise ContentFiltered(blocking.rule, blocking.category, param=slot.where)
            if verdict.action == "mask" and verdict.text != slot.text:
                texts[index] = verdict.text
                masked_by = masked_by or next(d for d in verdict.hits if d.action == "mask")
        if masked_by is not None:
            try:
                apply_guard_texts(request, texts)
            except ValueError:  # a mask inside a tool's JSON schema broke it: the rule acts as a block
                raise ContentFiltered(masked_by.rule, masked_by.category, param="tools") from None


__all__ = ["Guarded", "guard_input"]

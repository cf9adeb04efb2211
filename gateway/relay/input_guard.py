"""Step 5, the input guard: every text of the request scanned before the engine is called.

The texts are the ones the wire types list (``gateway.protocol.guard_texts``): message contents, tool results,
assistant tool-call arguments, tool descriptions and parameter schemas, completion prompts. A block ends the
request with 400 ``content_filter`` naming the rule and, as ``param``, where the text sits. A mask rewrites the
text in the request itself, so the one upstream body built afterwards carries the masked text; a mask that
would break a tool's JSON parameter schema, or the JSON arguments of a tool call in the history (vLLM parses
them), acts as a block. The scan's decisions go to the record as they
are, and to the span as events (rule and offsets, never the text).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import msgspec

from gateway.errors import ContentFiltered
from gateway.guardrails.guard_http import GuardInput
from gateway.guardrails.guards import GuardSet
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
    mask_char = admitted.snapshot.bundle.guardrails.mask_char
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
                masks = [d for d in verdict.hits if d.action == "mask" and d.mode == "enforce"]
                if slot.kind == "tool_call_arguments" and not masks_kept_json(
                    slot.text, verdict.text, [(d.start, d.end) for d in masks], mask_char
                ):
                    raise ContentFiltered(masks[0].rule, masks[0].category, param=slot.where)
                texts[index] = verdict.text
                masked_by = masked_by or next(d for d in verdict.hits if d.action == "mask")
        if masked_by is not None:
            try:
                apply_guard_texts(request, texts)
            except ValueError:  # a mask inside a tool's JSON schema broke it: the rule acts as a block
                raise ContentFiltered(masked_by.rule, masked_by.category, param="tools") from None


async def classify_input(admitted: Guarded, record: RequestRecord, guards: GuardSet) -> None:
    """Guard models and webhooks on the request, once, after words and patterns (so on masked text).

    The request's texts are judged as one text, one call per rule, all rules at once. An enforced block (an
    Unsafe category the rule blocks, or a guard failure with ``on_error: block``) raises ``ContentFiltered``.
    """
    active = guards.active(admitted.client_id, "input")
    if not active:
        return
    text = "\n\n".join(slot.text for slot in guard_texts(admitted.request) if slot.text)
    if not text:
        return
    item = GuardInput(text, "input", admitted.client_id)
    with phase(SPAN_INPUT_GUARD) as span:
        found = await asyncio.gather(*(guard.judge(item, mode) for guard, mode in active))
        decisions = [d for d in found if d is not None]
        for decision in decisions:
            record.decisions.append(decision)
            add_decision_event(span, decision)
        blocking = next((d for d in decisions if d.action == "block" and d.mode == "enforce"), None)
        if blocking is not None:
            raise ContentFiltered(blocking.rule, blocking.category)


# Characters JSON may use outside a string value: a mask character among them proves nothing.
_JSON_BARE = frozenset('0123456789+-.eEtrufalsn{}[],:" \t\r\n\\')


def masks_kept_json(text: str, masked: str, spans: list[tuple[int, int]], mask_char: str) -> bool:
    """True when every masked span of the JSON ``text`` lies inside a string value.

    Spans without a quote or backslash leave every string's bounds where they were, so a mask character JSON
    allows only inside strings makes ``masked`` parse exactly when each span sat inside a string (a span that
    split an escape sequence does not parse either)."""
    if mask_char in _JSON_BARE or any('"' in text[a:b] or "\\" in text[a:b] for a, b in spans):
        return False
    try:
        msgspec.json.decode(masked)
    except msgspec.DecodeError:
        return False
    return True


__all__ = ["Guarded", "classify_input", "guard_input", "masks_kept_json"]

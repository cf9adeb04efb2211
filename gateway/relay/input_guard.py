"""Step 5, the input guard: every prompt text scanned before the engine is called.

A block ends the request with 400 ``content_filter`` naming the rule; a mask rewrites the text in the
request itself, so the one upstream body built afterwards carries the masked text. The scan's decisions go
to the record as they are, and to the span as events (rule and offsets, never the text).
"""

from __future__ import annotations

from gateway.errors import ContentFiltered
from gateway.protocol import AnyRequest, CompletionRequest, TextPart
from gateway.relay.admission import AdmittedRequest
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.spans import SPAN_INPUT_GUARD, add_decision_event, phase


def guard_input(admitted: AdmittedRequest, record: RequestRecord) -> None:
    """Scan the prompt; raise ``ContentFiltered`` on a block, mask the request in place on a mask."""
    guard = admitted.snapshot.guardrails
    request = admitted.request
    with phase(SPAN_INPUT_GUARD) as span:
        texts = prompt_parts(request)
        changed = False
        for index, text in enumerate(texts):
            if not text:
                continue
            verdict = guard.scan(text, "input", admitted.client_id)
            for decision in verdict.hits:
                record.decisions.append(decision)
                add_decision_event(span, decision)
            blocking = verdict.blocking()
            if blocking is not None:
                raise ContentFiltered(blocking.rule, blocking.category, param=admitted.endpoint.prompt_param)
            if verdict.action == "mask" and verdict.text != text:
                texts[index] = verdict.text
                changed = True
        if changed:
            apply_parts(request, texts)


def prompt_parts(request: AnyRequest) -> list[str]:
    """Every prompt text, in order: the completion prompt, or each message's content or content parts."""
    if isinstance(request, CompletionRequest):
        return request.prompt_text()
    parts: list[str] = []
    for message in request.messages:
        if isinstance(message.content, list):
            parts.extend(part.text for part in message.content)
        else:
            parts.append(message.content or "")
    return parts


def apply_parts(request: AnyRequest, texts: list[str]) -> None:
    """Put ``texts`` (as ``prompt_parts`` listed them) back into the request."""
    if isinstance(request, CompletionRequest):
        request.prompt = texts[0]
        return
    it = iter(texts)
    for message in request.messages:
        if isinstance(message.content, list):
            message.content = [TextPart(next(it)) for _ in message.content]
        else:
            value = next(it)
            message.content = value if message.content is not None else None


__all__ = ["apply_parts", "guard_input", "prompt_parts"]

"""The texts of a request that the input guard scans, each with where it sits, and the way masked text goes back.

A request lists its texts as ``TextSlot``s (text plus a setter). ``guard_texts(request)`` shows them to the guard;
``apply_guard_texts(request, texts)`` writes the guard's verdicts back in the same order, so that what goes
upstream is the masked request, re-serialised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

TextKind = Literal[
    "message",  # a system, developer, user or assistant message's content (one entry per text part)
    "tool_result",  # a ``tool`` message's content
    "tool_call_arguments",  # an assistant tool call's JSON arguments, as text
    "tool_description",  # a tool definition's description
    "tool_parameters",  # a tool definition's parameter schema, serialised as compact JSON
    "prompt",  # a text completion's prompt
    "input",  # an embeddings input
]


@dataclass(frozen=True, slots=True)
class GuardText:
    """One text to scan. ``where`` is a JSON path into the request body, e.g. ``messages[2].content[0]``."""

    kind: TextKind
    where: str
    text: str


@dataclass(frozen=True, slots=True)
class TextSlot:
    text: GuardText
    put: Callable[[str], None]


class HasTexts(Protocol):
    def text_slots(self) -> list[TextSlot]: ...


def guard_texts(request: HasTexts) -> list[GuardText]:
    """Every text the input guard scans, with where it sits, in a stable order."""
    return [slot.text for slot in request.text_slots()]


def apply_guard_texts(request: HasTexts, texts: Sequence[str]) -> None:
    """Writes (masked) texts back, one per ``guard_texts(request)`` entry and in the same order.

    Unchanged texts are left alone. Raises ``ValueError`` on a count mismatch, or when a masked parameter
    schema no longer parses as a JSON object (the request must then be refused).
    """
    slots = request.text_slots()
    if len(texts) != len(slots):
        raise ValueError(f"expected {len(slots)} texts, got {len(texts)}")
    for slot, text in zip(slots, texts, strict=True):
        if text != slot.text.text:
            slot.put(text)


__all__ = ["GuardText", "HasTexts", "TextKind", "TextSlot", "apply_guard_texts", "guard_texts"]

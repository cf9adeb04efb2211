"""The result of scanning a whole text: what the policy decided and why.

A verdict's hits are the same ``Decision`` objects the stream pipeline produces, so the request flow hands
them to the recorder as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.guardrails.pipeline import Decision

VerdictAction = Literal["allow", "flag", "mask", "block"]
_STRENGTH: dict[str, int] = {"allow": 0, "flag": 1, "mask": 2, "block": 3}


@dataclass(slots=True, frozen=True)
class Verdict:
    """``action`` is the strongest enforced action among the hits; shadow hits never act."""

    action: VerdictAction
    hits: tuple[Decision, ...]
    text: str

    def blocking(self) -> Decision | None:
        """The first enforced block, if the verdict blocks."""
        return next((d for d in self.hits if d.action == "block" and d.mode == "enforce"), None)

    def to_json(self) -> dict[str, object]:
        return {"action": self.action, "hits": [h.to_json() for h in self.hits], "text": self.text}


def strongest(hits: tuple[Decision, ...]) -> VerdictAction:
    best: VerdictAction = "allow"
    for hit in hits:
        if hit.mode == "enforce" and _STRENGTH[hit.action] > _STRENGTH[best]:
            best = hit.action  # type: ignore[assignment]
    return best


__all__ = ["Verdict", "VerdictAction", "strongest"]

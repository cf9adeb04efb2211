"""The result of scanning a whole text: what the policy decided and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VerdictAction = Literal["allow", "flag", "mask", "block"]
_STRENGTH: dict[str, int] = {"allow": 0, "flag": 1, "mask": 2, "block": 3}


@dataclass(slots=True, frozen=True)
class Hit:
    """One rule match. Offsets index the original (not normalised) text, end exclusive."""

    rule: str
    category: str
    action: str
    mode: str
    start: int
    end: int

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "category": self.category,
            "action": self.action,
            "start": self.start,
            "end": self.end,
            "mode": self.mode,
        }


@dataclass(slots=True, frozen=True)
class Verdict:
    """``action`` is the strongest enforced action among the hits; shadow hits never act."""

    action: VerdictAction
    hits: tuple[Hit, ...]
    text: str

    def to_json(self) -> dict[str, object]:
        return {"action": self.action, "hits": [h.to_json() for h in self.hits], "text": self.text}


def strongest(hits: tuple[Hit, ...]) -> VerdictAction:
    best: VerdictAction = "allow"
    for hit in hits:
        if hit.mode == "enforce" and _STRENGTH[hit.action] > _STRENGTH[best]:
            best = hit.action  # type: ignore[assignment]
    return best


__all__ = ["Hit", "Verdict", "VerdictAction", "strongest"]

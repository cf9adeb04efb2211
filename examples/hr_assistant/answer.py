"""The cited answer: the prompt built from the retrieved chunks, and the streamed reply read to its end.

How a stream ended matters to the user: Menshen ends it with ``finish_reason: "content_filter"`` when its
policy withholds the rest, and with ``"length"`` plus the ``menshen`` extension
``{"stopped": "repetition_loop", ...}`` when it cut a looping answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from examples.hr_assistant.store import Hit

Stopped = Literal["content_filter", "repetition_loop", "length"]

SYSTEM_PROMPT: Final = (
    "You are Example Corp's HR assistant. Answer the employee's question using only the handbook "
    "excerpts below. Cite each excerpt you use by its section id in square brackets, e.g. [annual-leave]. "
    "If the excerpts do not answer the question, say so and suggest contacting HR. Answer in the language "
    "of the question, briefly."
)

NOTICES: Final[dict[Stopped, str]] = {
    "content_filter": "The answer was withheld by Menshen's content policy.",
    "repetition_loop": "The answer was cut because it kept repeating itself.",
    "length": "The answer was cut at the length limit (--max-tokens).",
}


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    title: str
    score: float


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    sources: list[Source]
    stopped: Stopped | None  # None: the model finished its answer

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "sources": [{"id": s.id, "title": s.title, "score": s.score} for s in self.sources],
            "stopped": self.stopped,
        }


def sources(hits: Iterable[Hit]) -> list[Source]:
    """One source per section, with its best chunk's score, best first."""
    best: dict[str, Source] = {}
    for hit in hits:
        known = best.get(hit.chunk.section)
        if known is None or hit.score > known.score:
            best[hit.chunk.section] = Source(hit.chunk.section, hit.chunk.title, round(hit.score, 4))
    return sorted(best.values(), key=lambda s: s.score, reverse=True)


def messages(question: str, hits: Iterable[Hit]) -> list[ChatCompletionMessageParam]:
    excerpts = "\n\n".join(f"[{h.chunk.section}] {h.chunk.title}\n{h.chunk.text}" for h in hits)
    return [
        {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nHandbook excerpts:\n\n{excerpts}"},
        {"role": "user", "content": question},
    ]


def read_stream(
    chunks: Iterable[ChatCompletionChunk], on_text: Callable[[str], None]
) -> tuple[str, Stopped | None]:
    """The streamed text (each piece passed to ``on_text`` as it arrives) and why the stream was stopped."""
    parts: list[str] = []
    finish: str | None = None
    extension: Any = None
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
                on_text(choice.delta.content)
            if choice.finish_reason is not None:
                finish = choice.finish_reason
                extension = (chunk.model_extra or {}).get("menshen")
    return "".join(parts), _stopped(finish, extension)


def _stopped(finish: str | None, extension: Any) -> Stopped | None:
    if finish == "content_filter":
        return "content_filter"
    if finish == "length":
        looped = isinstance(extension, dict) and extension.get("stopped") == "repetition_loop"
        return "repetition_loop" if looped else "length"
    return None

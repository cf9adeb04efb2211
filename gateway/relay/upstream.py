"""What goes to the engine: re-serialised from the validated request, with the policy applied.

``plan_call`` sizes the call before admission (the token reservation needs the prompt estimate and the
capped ``max_tokens``) and refuses what the policy refuses. ``UpstreamPlan.body`` encodes the request once,
after the input guard has masked it. The policy caps ``max_tokens`` and the context, fills Qwen3's
recommended sampling where the client set none, and may add vLLM's ``repetition_detection`` backstop. The
engine is always asked to stream with usage, so that usage can settle the token reservation and
non-streamed answers are cut like streamed ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.policy.sections import GenerationSection
from gateway.protocol import AnyRequest, ChatCompletionRequest

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty")


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    max_tokens: int
    prompt_estimate: int
    temperature: float | None
    sampling: dict[str, Any]  # the policy's defaults for fields the client left unset (None: drop it)
    repetition: dict[str, int] | None  # vLLM's repetition_detection backstop, if the policy sends it

    @property
    def reserve_tokens(self) -> int:
        return self.prompt_estimate + self.max_tokens

    def body(self, request: AnyRequest) -> bytes:
        """The engine's request body, from the request as it is now (masked by the input guard)."""
        body: dict[str, Any] = msgspec.to_builtins(request)
        body.pop("max_completion_tokens", None)
        body["max_tokens"] = self.max_tokens
        for name, value in self.sampling.items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        if self.repetition is not None:
            body["repetition_detection"] = self.repetition
        return msgspec.json.encode(body)


def estimate_tokens(texts: list[str]) -> int:
    """A cheap upper-leaning estimate: one token per CJK character, one per 3 other characters.

    It only sizes the reservation; the engine's real usage settles it.
    """
    total = 0
    for text in texts:
        # ASCII (most prompts, every embedding batch of English text) is checked in C, not per character.
        wide = 0 if text.isascii() else sum(1 for ch in text if ord(ch) >= 0x2E80)
        total += wide + math.ceil((len(text) - wide) / 3) + 4
    return total


def plan_call(
    request: AnyRequest, generation: GenerationSection, repetition: dict[str, int] | None
) -> UpstreamPlan:
    """Size and check the call; raises ``InvalidRequest`` for what the policy refuses."""
    prompt_estimate = estimate_tokens(request.prompt_text())
    if prompt_estimate >= generation.context_cap:
        raise InvalidRequest(
            f"The prompt (about {prompt_estimate} tokens) exceeds this deployment's context cap of "
            f"{generation.context_cap} tokens.",
            param="messages" if isinstance(request, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    requested = request.requested_max_tokens()
    max_tokens = min(requested or generation.default_max_tokens, generation.max_tokens_cap)
    max_tokens = max(1, min(max_tokens, generation.context_cap - prompt_estimate))

    thinking = request.thinking if isinstance(request, ChatCompletionRequest) else False
    defaults = generation.thinking if thinking else generation.non_thinking
    sampling: dict[str, Any] = {}
    for name in _SAMPLING_FIELDS:
        if getattr(request, name, None) in (None, msgspec.UNSET):
            sampling[name] = getattr(defaults, name)
    temperature = sampling.get("temperature", request.temperature)
    if generation.refuse_greedy and temperature == 0:
        raise InvalidRequest(
            "Greedy decoding (temperature 0) is disabled by policy: it makes the model loop.",
            param="temperature",
            code="greedy_refused",
        )
    return UpstreamPlan(
        max_tokens=max_tokens,
        prompt_estimate=prompt_estimate,
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        sampling=sampling,
        repetition=repetition,
    )


__all__ = ["UpstreamPlan", "estimate_tokens", "plan_call"]

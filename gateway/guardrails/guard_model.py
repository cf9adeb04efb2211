"""A guard model (Qwen3Guard-Gen) on an OpenAI-compatible engine, asked through chat completions.

The model's chat template turns the conversation into its moderation prompt: a user turn alone is a prompt
verdict, a user and an assistant turn a response verdict. The answer is constrained to the verdict grammar
(`guard_verdict.verdict_regex`) with vLLM's ``structured_outputs``, and parsed strictly.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.guardrails.guard_http import AnswerAction, GuardAnswer, GuardCallError, GuardInput, JsonPoster
from gateway.guardrails.guard_verdict import VerdictFormatError, parse_verdict, verdict_regex

_MAX_VERDICT_TOKENS = 64  # "Safety: ...\nCategories: <a few>\nRefusal: No" fits with room to spare


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class ClassifierCaller:
    """Classifies one text per call; maps the verdict to an action with the rule's category map."""

    __slots__ = ("_categories", "_controversial", "_model", "_other", "_poster", "_regex")

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        categories: Mapping[str, str],
        *,
        other: str,
        controversial: str,
    ) -> None:
        self._poster = JsonPoster(base_url.rstrip("/") + "/chat/completions", api_key)
        self._model = model
        self._categories = dict(categories)
        self._other = other
        self._controversial = controversial
        self._regex = {False: verdict_regex(response=False), True: verdict_regex(response=True)}

    def body(self, item: GuardInput) -> bytes:
        response = item.where != "input"
        messages = (
            [{"role": "user", "content": item.prompt or ""}, {"role": "assistant", "content": item.text}]
            if response
            else [{"role": "user", "content": item.text}]
        )
        return msgspec.json.encode(
            {
                "model": self._model,
                "messages": messages,
                "max_tokens": _MAX_VERDICT_TOKENS,
                "temperature": 0,
                "stream": False,
                "structured_outputs": {"regex": self._regex[response]},
            }
        )

    async def call(self, item: GuardInput) -> GuardAnswer:
        data = await self._poster.post(self.body(item))
        try:
            completion = msgspec.json.decode(data, type=_Completion)
            content = completion.choices[0].message.content if completion.choices else None
            verdict = parse_verdict(content or "", response=item.where != "input")
        except (msgspec.DecodeError, msgspec.ValidationError, VerdictFormatError):
            raise GuardCallError("bad_verdict") from None
        if verdict.safety == "Safe":
            return GuardAnswer("allow", "safe")
        if verdict.safety == "Controversial":
            category = verdict.categories[0] if verdict.categories else "Controversial"
            return GuardAnswer(self._controversial, category)  # type: ignore[arg-type]  # policy literal
        actions = [self._categories.get(c, self._other) for c in verdict.categories] or [self._other]
        # the strongest action wins; the category reported is the first that takes it
        action: AnswerAction = "block" if "block" in actions else "flag"
        category = next(
            (c for c, a in zip(verdict.categories, actions, strict=True) if a == action), "Unsafe"
        )
        return GuardAnswer(action, category)

    async def aclose(self) -> None:
        await self._poster.aclose()


__all__ = ["ClassifierCaller"]

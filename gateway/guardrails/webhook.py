"""An HTTP guard service (the security team's own DLP or moderation service) behind a small contract.

Request: ``POST url`` with ``Authorization: Bearer <secret>`` and ``{"text", "where", "client", "rule"}``.
Answer: 200 with ``{"action": "allow" | "block" | "flag", "category": "..."}``; anything else is an error
and ``on_error`` applies.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.guardrails.guard_http import GuardAnswer, GuardCallError, GuardInput, JsonPoster

_CATEGORY_MAX = 64


class _Answer(msgspec.Struct):
    action: Literal["allow", "block", "flag"]
    category: str | None = None


class WebhookCaller:
    __slots__ = ("_poster", "_rule")

    def __init__(self, url: str, secret: str | None, rule: str) -> None:
        self._poster = JsonPoster(url, secret)
        self._rule = rule

    async def call(self, item: GuardInput) -> GuardAnswer:
        body = msgspec.json.encode(
            {"text": item.text, "where": item.where, "client": item.client, "rule": self._rule}
        )
        data = await self._poster.post(body)
        try:
            answer = msgspec.json.decode(data, type=_Answer)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise GuardCallError("bad_answer") from None
        # the category reaches metrics and the audit trail: keep it a short label
        category = (answer.category or answer.action)[:_CATEGORY_MAX]
        return GuardAnswer(answer.action, category)

    async def aclose(self) -> None:
        await self._poster.aclose()


__all__ = ["WebhookCaller"]

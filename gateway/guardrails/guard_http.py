"""What a guard caller is, and the one aiohttp session each caller owns.

A caller turns a text into a `GuardAnswer` or raises `GuardCallError`; timeouts, the breaker and the cache
are the guard's (`gateway.guardrails.guards`), so both kinds of caller stay a single HTTP exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp

AnswerAction = Literal["allow", "block", "flag"]


@dataclass(frozen=True, slots=True)
class GuardAnswer:
    action: AnswerAction
    category: str


@dataclass(frozen=True, slots=True)
class GuardInput:
    """One thing to judge: ``text`` at ``where``; for output, the ``prompt`` it answers."""

    text: str
    where: str
    client: str | None
    prompt: str | None = None


class GuardCallError(Exception):
    """The guard could not give an answer; ``reason`` is a short identifier for metrics and spans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GuardCaller(Protocol):
    async def call(self, item: GuardInput) -> GuardAnswer: ...

    async def aclose(self) -> None: ...


class JsonPoster:
    """POSTs JSON with a bearer token over a session created in the running loop, on first use."""

    __slots__ = ("_http", "_token", "url")

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self._token = token
        self._http: aiohttp.ClientSession | None = None

    async def post(self, body: bytes) -> bytes:
        if self._http is None:
            headers = {"content-type": "application/json"}
            if self._token:
                headers["authorization"] = f"Bearer {self._token}"
            self._http = aiohttp.ClientSession(headers=headers, trust_env=False)
        try:
            async with self._http.post(self.url, data=body) as response:
                data = await response.read()
                if response.status != 200:
                    raise GuardCallError(f"http_{response.status}")
                return data
        except aiohttp.ClientError:
            raise GuardCallError("connection") from None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


__all__ = ["AnswerAction", "GuardAnswer", "GuardCallError", "GuardCaller", "GuardInput", "JsonPoster"]

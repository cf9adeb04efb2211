"""POST /v1/chat/completions and /v1/completions: thin handlers over the relay service."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from gateway.relay.endpoints import CHAT, COMPLETIONS
from gateway.relay.service import RelayService


class CompletionsController(Controller):
    path = "/v1"

    @post("/chat/completions", status_code=200)
    async def chat(
        self, request: Request[Any, Any, Any], relay: NamedDependency[RelayService]
    ) -> ASGIResponse:
        return await relay.handle(request, CHAT)

    @post("/completions", status_code=200)
    async def completions(
        self, request: Request[Any, Any, Any], relay: NamedDependency[RelayService]
    ) -> ASGIResponse:
        return await relay.handle(request, COMPLETIONS)


__all__ = ["CompletionsController"]

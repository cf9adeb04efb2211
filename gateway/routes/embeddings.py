"""POST /v1/embeddings: a thin handler over the embeddings flow."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from gateway.relay.embeddings import EmbeddingsService


@post("/v1/embeddings", status_code=200)
async def create_embeddings(
    request: Request[Any, Any, Any], embeddings: NamedDependency[EmbeddingsService]
) -> ASGIResponse:
    return await embeddings.handle(request)


__all__ = ["create_embeddings"]

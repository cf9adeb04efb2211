"""The real vLLM CPU embeddings engine of ``cpu-demo`` (all-MiniLM-L6-v2) under its supervisor.

Through the real ``openai`` SDK with the engine's internal key: 384-dimension vectors, token usage,
and vectors that carry meaning (related phrases are closer than unrelated ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import httpx
import openai
import pytest

from engine import EngineSupervisor
from tests.support.e2e import ENGINE_START_TIMEOUT_S

pytestmark = [pytest.mark.engine, pytest.mark.timeout(ENGINE_START_TIMEOUT_S + 300)]


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_have_384_dimensions_usage_and_meaning(embeddings_supervisor: EngineSupervisor) -> None:
    sup = embeddings_supervisor
    assert (sup.role, sup.served_model_name) == ("embeddings", "all-minilm-l6-v2")
    with openai.OpenAI(
        base_url=f"{sup.base_url}/v1", api_key=sup.api_key, http_client=httpx.Client(trust_env=False)
    ) as client:
        response = client.embeddings.create(
            model=sup.served_model_name, input=["annual leave days", "vacation days", "server rack"]
        )
    assert response.model == "all-minilm-l6-v2"
    leave, vacation, rack = (item.embedding for item in sorted(response.data, key=lambda d: d.index))
    assert len(leave) == len(vacation) == len(rack) == 384
    assert response.usage.prompt_tokens > 0
    assert _cos(leave, vacation) > _cos(leave, rack)


def test_embeddings_engine_requires_its_internal_key(embeddings_supervisor: EngineSupervisor) -> None:
    sup = embeddings_supervisor
    body = {"model": sup.served_model_name, "input": "annual leave days"}
    with httpx.Client(base_url=sup.base_url, timeout=60, trust_env=False) as client:
        refused = client.post("/v1/embeddings", json=body)
        wrong = client.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer not-the-key"})
    assert (refused.status_code, wrong.status_code) == (401, 401)

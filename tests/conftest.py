"""Shared fixtures: a fake engine over a real socket, the real gateway app in front of it, and a key prefix
of the test's own on the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.engine import FakeEngine
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway
from tests.support.redis import purge, unique_prefix


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=("qwen3-8b",)) as engine:
        yield engine


@pytest.fixture
def gateway(fake_engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    """The gateway with ``--auth none`` (loopback) in front of the fake engine."""
    with run_gateway(gateway_settings(tmp_path, fake_engine.url)) as running:
        yield running


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Rate-limit keys of this test's own on the real Redis, deleted afterwards."""
    p = unique_prefix()
    yield p
    await purge(p)

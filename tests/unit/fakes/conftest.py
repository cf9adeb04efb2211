"""Fixtures for the fake engine's own tests: one engine per test on the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.fakes import FakeEngine
from tests.support.fakes import HELLO, MODEL


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    async with FakeEngine(models=(MODEL,), default_script=HELLO) as fe:
        yield fe
    assert fe.errors == []


@pytest.fixture
async def http(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=10) as client:
        yield client


@pytest.fixture
async def sdk(engine: FakeEngine) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=engine.base_url, api_key="unused", max_retries=0, timeout=10) as c:
        yield c

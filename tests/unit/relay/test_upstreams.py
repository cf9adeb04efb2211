"""The upstream set against fake engines over real sockets: routing by model, refresh and its rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine.client import EngineClient, EngineClientConfig
from gateway.errors import NotFound, ServiceUnavailable
from gateway.relay.upstreams import Upstream, UpstreamSet
from tests.fakes.engine import FakeEngine
from tests.support.ports import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _upstream(url: str) -> Upstream:
    return Upstream(EngineClient(EngineClientConfig(base_url=url, connect_timeout_s=1.0)))


def _model_reads(engine: FakeEngine) -> int:
    return sum(1 for r in list(engine.requests) if r.path == "/v1/models")


@pytest.fixture
async def engines() -> AsyncIterator[tuple[FakeEngine, FakeEngine]]:
    chat = FakeEngine(models=("qwen3-8b", "shared"))
    embed = FakeEngine(models=(), embedding_models=("all-minilm-l6-v2", "shared"))
    await chat.start()
    await embed.start()
    try:
        yield chat, embed
    finally:
        await chat.stop()
        await embed.stop()


@pytest.fixture
async def upstreams(engines: tuple[FakeEngine, FakeEngine]) -> AsyncIterator[tuple[UpstreamSet, Clock]]:
    clock = Clock()
    chosen = UpstreamSet([_upstream(e.url) for e in engines], min_refresh_gap_s=1.0, clock=clock)
    await chosen.refresh()
    try:
        yield chosen, clock
    finally:
        await chosen.aclose()


async def test_pick_routes_by_model_and_lists_the_union(upstreams: tuple[UpstreamSet, Clock]) -> None:
    chosen, _ = upstreams
    chat, embed = chosen.upstreams
    assert chosen.pick("qwen3-8b") is chat
    assert chosen.pick("all-minilm-l6-v2") is embed
    assert chosen.pick("shared") is chat, "a model two engines serve goes to the first (until the pool)"
    assert chosen.pick("nope") is None
    assert [c.id for c in chosen.cards()] == ["qwen3-8b", "shared", "all-minilm-l6-v2"]


async def test_unknown_model_is_404_when_every_engine_answered(upstreams: tuple[UpstreamSet, Clock]) -> None:
    chosen, clock = upstreams
    clock.now += 5
    with pytest.raises(NotFound) as info:
        await chosen.resolve("nope")
    assert info.value.code == "model_not_found" and info.value.param == "model"


async def test_unknown_model_is_503_while_an_engine_is_down(engines: tuple[FakeEngine, FakeEngine]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    chosen = UpstreamSet([_upstream(engines[0].url), _upstream(down)])
    try:
        await chosen.refresh()
        assert [u.answered for u in chosen.upstreams] == [True, False]
        assert chosen.upstreams[1].problem
        assert (await chosen.resolve("qwen3-8b")) is chosen.upstreams[0]
        with pytest.raises(ServiceUnavailable):
            await chosen.resolve("nope")  # it may be the down engine's
    finally:
        await chosen.aclose()


async def test_a_new_model_is_read_at_once_but_at_most_once_a_gap(
    upstreams: tuple[UpstreamSet, Clock], engines: tuple[FakeEngine, FakeEngine]
) -> None:
    chosen, clock = upstreams
    _, embed = engines
    embed.embedding_models = (*embed.embedding_models, "qwen3-embedding-0.6b")
    reads = _model_reads(embed)
    with pytest.raises(NotFound):
        await chosen.resolve("qwen3-embedding-0.6b")  # the start-up read is less than a gap old
    assert _model_reads(embed) == reads
    clock.now += 1.5
    assert (await chosen.resolve("qwen3-embedding-0.6b")) is chosen.upstreams[1]
    assert _model_reads(embed) == reads + 1


async def test_concurrent_misses_share_one_read(
    upstreams: tuple[UpstreamSet, Clock], engines: tuple[FakeEngine, FakeEngine]
) -> None:
    chosen, clock = upstreams
    clock.now += 5
    reads = [_model_reads(e) for e in engines]
    results = await asyncio.gather(*(chosen.resolve("nope") for _ in range(8)), return_exceptions=True)
    assert all(isinstance(r, NotFound) for r in results)
    assert [_model_reads(e) for e in engines] == [n + 1 for n in reads]


async def test_a_down_engine_keeps_its_last_models(engines: tuple[FakeEngine, FakeEngine]) -> None:
    chat, _ = engines
    chosen = UpstreamSet([_upstream(chat.url)])
    try:
        await chosen.refresh()
        await chat.stop()
        await chosen.refresh()
        upstream = chosen.upstreams[0]
        assert not upstream.answered and upstream.problem
        assert chosen.pick("qwen3-8b") is upstream, "it may come back: requests get the engine's own error"
    finally:
        await chosen.aclose()


def test_an_empty_set_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        UpstreamSet([])

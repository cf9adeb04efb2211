"""Step 6's choice: the engines the gateway fronts, the models each serves, and which one takes a request.

Each ``Upstream`` is one engine (its URL and internal key, in an ``EngineClient``) with the models its
``/v1/models`` listed at the last refresh. ``UpstreamSet.pick(model)`` is the one place a request's engine is
chosen, so that a pool (several engines for one model: least in flight, failover before the first byte)
replaces its body without touching the flow. Model lists are refreshed at start, then every few seconds by the
app's lifespan, and at once (at most once per ``min_refresh_gap_s``) when a request names a model no engine
listed. An unknown model is 404 ``model_not_found`` only when every engine answered: while one is down, the
model may be its, so the answer is 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.client import EngineClient, EngineError
from gateway.errors import NotFound, ServiceUnavailable
from gateway.protocol import UpModelCard, UpModelList

_decode_models = msgspec.json.Decoder(UpModelList).decode


@dataclass(slots=True)
class Upstream:
    """One engine. ``models`` is what it listed last (kept while it is down: it may come back)."""

    client: EngineClient
    cards: tuple[UpModelCard, ...] = ()
    answered: bool = False  # the last model-list fetch succeeded
    problem: str | None = "not checked yet"
    supervisor: Any = None  # the engine's supervisor under ``gateway up``: its status shows on /readyz
    models: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.models = frozenset(card.id for card in self.cards)

    @property
    def url(self) -> str:
        return self.client.config.base_url

    async def refresh(self) -> None:
        try:
            response = await self.client.get("/v1/models")
            if response.status_code != 200:
                raise EngineError(f"engine /v1/models returned {response.status_code}")
            listed = _decode_models(response.content)
        except (EngineError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.answered, self.problem = False, str(exc) or type(exc).__name__
            return
        self.cards = tuple(listed.data)
        self.models = frozenset(card.id for card in self.cards)
        self.answered, self.problem = True, None


class UpstreamSet:
    """The engines behind the gateway; one instance per process."""

    __slots__ = ("_clock", "_last_refresh", "_lock", "_min_gap", "upstreams")

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        min_refresh_gap_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = tuple(upstreams)
        self._min_gap = min_refresh_gap_s
        self._clock = clock
        self._last_refresh: float | None = None
        self._lock: asyncio.Lock | None = None  # made in the running loop, on first use

    def pick(self, model: str) -> Upstream | None:
        """The engine serving ``model``, or None when none listed it."""
        for upstream in self.upstreams:
            if model in upstream.models:
                return upstream
        return None

    async def resolve(self, model: str) -> Upstream:
        """``pick``, after one rate-limited refresh when no engine listed ``model``; raises 404 or 503."""
        upstream = self.pick(model)
        if upstream is not None:
            return upstream
        await self.refresh(min_gap_s=self._min_gap)
        upstream = self.pick(model)
        if upstream is not None:
            return upstream
        if all(u.answered for u in self.upstreams):
            raise NotFound(f"The model `{model}` does not exist.", param="model", code="model_not_found")
        raise ServiceUnavailable("The model engine is unavailable. Retry later.", code="engine_unavailable")

    async def refresh(self, *, min_gap_s: float = 0.0) -> None:
        """Every engine's model list, fetched together. Callers arriving during a refresh share it; with
        ``min_gap_s``, a refresh that ended less than that ago counts as fresh."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        asked = self._clock()
        async with self._lock:
            last = self._last_refresh
            if last is not None and (last >= asked or self._clock() - last < min_gap_s):
                return
            await asyncio.gather(*(u.refresh() for u in self.upstreams))
            self._last_refresh = self._clock()

    async def keep_fresh(self, interval_s: float) -> None:
        """The lifespan's task: refresh now, then every ``interval_s``."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)

    def cards(self) -> list[UpModelCard]:
        """Every model served, once each, in engine order."""
        seen: set[str] = set()
        out: list[UpModelCard] = []
        for upstream in self.upstreams:
            for card in upstream.cards:
                if card.id not in seen:
                    seen.add(card.id)
                    out.append(card)
        return out

    @property
    def any_answered(self) -> bool:
        return any(u.answered for u in self.upstreams)

    async def aclose(self) -> None:
        await asyncio.gather(*(u.client.aclose() for u in self.upstreams), return_exceptions=True)


__all__ = ["Upstream", "UpstreamSet"]

"""Streaming client to an OpenAI-compatible engine (vLLM), over one keep-alive connection pool.

It relays as it reads: each network read is split into SSE ``data`` payloads and handed on at once, so
nothing is buffered beyond the chunk in hand. Timeouts are separate for connecting, for the first chunk
and for the gap between chunks, enforced with one rescheduled ``asyncio.Timeout`` (cheap per read).
Closing a stream closes its connection, which makes vLLM abort the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx


class EngineError(Exception):
    """Base of the engine client's errors."""


class EngineUnavailable(EngineError):
    """The engine could not be reached (refused, reset, DNS)."""


class EngineTimeout(EngineError):
    """Connect, first-chunk or idle timeout."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"engine {phase} timeout")
        self.phase = phase


class EngineHTTPError(EngineError):
    """The engine answered with an error status before streaming."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"engine returned HTTP {status}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class EngineClientConfig:
    base_url: str
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 120.0
    idle_timeout_s: float = 30.0
    max_connections: int = 256


class EngineStream:
    """One streamed engine response. Iterate ``payloads()``; always ``aclose()`` (idempotent)."""

    __slots__ = ("_cfg", "_closed", "_response")

    def __init__(self, response: httpx.Response, cfg: EngineClientConfig) -> None:
        self._response = response
        self._cfg = cfg
        self._closed = False

    async def reads(self) -> AsyncIterator[bytes]:
        """Raw network reads, with the first-chunk timeout and then the idle timeout."""
        it = self._response.aiter_raw().__aiter__()
        timeout = self._cfg.first_token_timeout_s
        phase = "first token"
        while True:
            try:
                async with asyncio.timeout(timeout or None):
                    data = await it.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise EngineTimeout(phase) from exc
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise EngineUnavailable(f"engine stream broken: {type(exc).__name__}") from exc
            timeout = self._cfg.idle_timeout_s
            phase = "idle"
            yield data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


class EngineClient:
    """Async client for the engine's OpenAI routes. One instance per process (it owns the pool)."""

    def __init__(self, cfg: EngineClientConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._cfg = cfg
        headers = {"authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=cfg.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout_s, read=None, write=10.0, pool=cfg.connect_timeout_s
            ),
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=64),
            trust_env=False,
        )

    @property
    def config(self) -> EngineClientConfig:
        return self._cfg

    def retarget(self, base_url: str, api_key: str | None) -> None:
        """Point at a restarted engine (new port and key); later requests use it."""
        self._cfg = EngineClientConfig(
            base_url=base_url,
            api_key=api_key,
            connect_timeout_s=self._cfg.connect_timeout_s,
            first_token_timeout_s=self._cfg.first_token_timeout_s,
            idle_timeout_s=self._cfg.idle_timeout_s,
            max_connections=self._cfg.max_connections,
        )
        self._client.base_url = httpx.URL(base_url)
        if api_key:
            self._client.headers["authorization"] = f"Bearer {api_key}"
        else:
            self._client.headers.pop("authorization", None)

    async def open_stream(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> EngineStream:
        """POST ``body`` and return the open stream once the engine answered with 200."""
        request = self._client.build_request(
            "POST", path, content=body, headers={"content-type": "application/json", **(headers or {})}
        )
        try:
            async with asyncio.timeout(self._cfg.first_token_timeout_s or None):
                response = await self._client.send(request, stream=True)
        except TimeoutError as exc:
            raise EngineTimeout("first token") from exc
        except httpx.TimeoutException as exc:
            raise EngineTimeout("connect") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            try:
                async with asyncio.timeout(self._cfg.connect_timeout_s):
                    content = await response.aread()
            except (TimeoutError, httpx.HTTPError):
                content = b""
            finally:
                await response.aclose()
            raise EngineHTTPError(response.status_code, content[:4096])
        return EngineStream(response, self._cfg)

    async def get(self, path: str, timeout_s: float = 5.0) -> httpx.Response:
        try:
            return await self._client.get(path, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise EngineTimeout("request") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"engine unreachable: {type(exc).__name__}") from exc

    async def get_json(self, path: str, timeout_s: float = 5.0) -> Any:
        response = await self.get(path, timeout_s)
        if response.status_code != 200:
            raise EngineHTTPError(response.status_code, response.content[:4096])
        return response.json()

    async def health(self, timeout_s: float = 2.0) -> str | None:
        """None when healthy, else the reason."""
        try:
            response = await self.get("/health", timeout_s)
        except EngineError as exc:
            return str(exc)
        return None if response.status_code == 200 else f"engine /health returned {response.status_code}"

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = [
    "EngineClient",
    "EngineClientConfig",
    "EngineError",
    "EngineHTTPError",
    "EngineStream",
    "EngineTimeout",
    "EngineUnavailable",
]

"""Streaming client to an OpenAI-compatible engine (vLLM), over one keep-alive aiohttp connection pool.

It relays as it reads: each network read is handed on at once (``readany``, no line buffering), so nothing
is buffered beyond the bytes in hand. Timeouts are separate for connecting, for the first chunk and for the
gap between chunks. aiohttp rather than httpx: its C parser and lean stream costs far less CPU per chunk.
Closing a half-read stream closes its connection, which makes vLLM abort the generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# Below uvicorn's (vLLM's) 5 s keep-alive, so a pooled connection is never reused just as the engine drops it
# (a POST is not retried on a stale connection).
_KEEPALIVE_S = 4.0
_POST_HEADERS = {"content-type": "application/json"}


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


@dataclass(frozen=True, slots=True)
class EngineResponse:
    """A small, fully read engine answer (``get``)."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class EngineStream:
    """One streamed engine response. Iterate ``reads()``; always ``aclose()`` (idempotent)."""

    __slots__ = ("_cfg", "_closed", "_response")

    def __init__(self, response: aiohttp.ClientResponse, cfg: EngineClientConfig) -> None:
        self._response = response
        self._cfg = cfg
        self._closed = False

    async def reads(self) -> AsyncIterator[bytes]:
        """Raw network reads, with the first-chunk timeout and then the idle timeout."""
        content = self._response.content
        timeout = self._cfg.first_token_timeout_s or None
        phase = "first token"
        while True:
            try:
                async with asyncio.timeout(timeout):
                    data = await content.readany()
            except TimeoutError as exc:
                raise EngineTimeout(phase) from exc
            except aiohttp.ClientError as exc:
                raise EngineUnavailable(f"engine stream broken: {type(exc).__name__}") from exc
            if not data:
                return
            timeout = self._cfg.idle_timeout_s or None
            phase = "idle"
            yield data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            _finish(self._response)


def _finish(response: aiohttp.ClientResponse) -> None:
    # A fully read body leaves a reusable connection; a half-read one must be dropped (vLLM then aborts).
    if response.content.is_eof():
        response.release()
    else:
        response.close()


def _post_headers(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    return {**_POST_HEADERS, **headers} if headers else _POST_HEADERS


@contextlib.contextmanager
def _post_errors() -> Iterator[None]:
    """aiohttp's and the timeout's exceptions of a POST, as the client's own errors."""
    try:
        yield
    except aiohttp.ServerTimeoutError as exc:  # aiohttp's connect timeout (also a TimeoutError)
        raise EngineTimeout("connect") from exc
    except TimeoutError as exc:
        raise EngineTimeout("first token") from exc
    except aiohttp.ClientError as exc:
        raise EngineUnavailable(f"engine unreachable: {type(exc).__name__}") from exc


class EngineClient:
    """Async client for the engine's OpenAI routes. One instance per process (it owns the pool)."""

    def __init__(self, cfg: EngineClientConfig) -> None:
        self._cfg = cfg
        self._base = cfg.base_url.rstrip("/")
        self._http: aiohttp.ClientSession | None = None  # created in the running loop, on first use

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
        self._base = base_url.rstrip("/")
        if self._http is not None:
            self._http.headers.popall("authorization", None)
            if api_key:
                self._http.headers["authorization"] = f"Bearer {api_key}"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            cfg = self._cfg
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=cfg.max_connections, keepalive_timeout=_KEEPALIVE_S),
                headers={"authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else None,
                # Connect covers waiting for a pooled connection too; reads are timed per read by the caller.
                timeout=aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s),
                # Bodies are relayed raw, so do not invite a compressed answer.
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                trust_env=False,
            )
        return self._http

    async def open_stream(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> EngineStream:
        """POST ``body`` and return the open stream once the engine answered with 200."""
        session = self._session()
        with _post_errors():
            async with asyncio.timeout(self._cfg.first_token_timeout_s or None):
                response = await session.post(self._base + path, data=body, headers=_post_headers(headers))
        if response.status != 200:
            try:
                async with asyncio.timeout(self._cfg.connect_timeout_s):
                    content = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                content = b""
            finally:
                _finish(response)
            raise EngineHTTPError(response.status, content[:4096])
        return EngineStream(response, self._cfg)

    async def post_json(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
        """POST ``body`` and return the whole 200 answer (non-streamed routes such as ``/v1/embeddings``).

        The connect timeout applies as for streams; the first-token timeout bounds the wait for the whole
        answer, which arrives at once. Cancelling the caller closes the connection, so the engine drops the
        request.
        """
        session = self._session()
        with _post_errors():
            async with (
                asyncio.timeout(self._cfg.first_token_timeout_s or None),
                session.post(self._base + path, data=body, headers=_post_headers(headers)) as response,
            ):
                content = await response.read()
        if response.status != 200:
            raise EngineHTTPError(response.status, content[:4096])
        return content

    async def get(self, path: str, timeout_s: float = 5.0) -> EngineResponse:
        session = self._session()
        try:
            async with asyncio.timeout(timeout_s), session.get(self._base + path) as response:
                return EngineResponse(response.status, await response.read())
        except TimeoutError as exc:
            raise EngineTimeout("request") from exc
        except aiohttp.ClientError as exc:
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
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()


__all__ = [
    "EngineClient",
    "EngineClientConfig",
    "EngineError",
    "EngineHTTPError",
    "EngineResponse",
    "EngineStream",
    "EngineTimeout",
    "EngineUnavailable",
]

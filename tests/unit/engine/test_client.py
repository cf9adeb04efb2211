"""The engine client against a real aiohttp server on loopback: streaming, timeouts, failures, aborts.

Configured timeouts are short so that every wait is bounded; assertions are on outcomes, never durations.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.client import (
    EngineClient,
    EngineClientConfig,
    EngineHTTPError,
    EngineStream,
    EngineTimeout,
    EngineUnavailable,
)
from tests.fakes import wire
from tests.support.ports import free_port

PATH = "/v1/chat/completions"
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
SHORT = 0.3  # configured timeouts: short enough to keep the suite quick, long enough for a busy machine
BOUND = 10.0  # an upper bound on waiting for an outcome that must happen (never asserted on)

STREAM_BYTES = [wire.sse(b'{"n":1}'), wire.sse(b'{"n":2}'), wire.DONE]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Engine:
    """What the server saw, and a gate that parks handlers until the test (or the teardown) opens it."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def seen(self, request: web.Request) -> None:
        self.headers.append(dict(request.headers))
        self.bodies.append(await request.read())
        transport = request.transport
        self.peers.append(transport.get_extra_info("peername") if transport is not None else None)

    async def start_sse(self, request: web.Request) -> web.StreamResponse:
        await self.seen(request)
        response = web.StreamResponse(headers={"content-type": wire.SSE_CONTENT_TYPE})
        await response.prepare(request)
        return response

    async def full_stream(self, request: web.Request) -> web.StreamResponse:
        response = await self.start_sse(request)
        for piece in STREAM_BYTES:
            await response.write(piece)
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        await self.seen(request)
        return web.json_response(wire.model_list(["qwen3-8b"], "/models/qwen3", 2048, 1))

    async def hang(self, request: web.Request) -> web.StreamResponse:
        """Never answer (until the gate opens)."""
        await self.seen(request)
        await self.park()
        return web.Response()

    async def park(self) -> None:
        """Wait for the gate; a client disconnect cancels the handler here, which is recorded."""
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.disconnected.set()
            raise


@asynccontextmanager
async def serve(routes: dict[str, Handler], engine: Engine | None = None) -> AsyncIterator[Engine]:
    engine = engine or Engine()
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(shutdown_timeout=1.0)
    engine.url = str(server.make_url(""))
    try:
        yield engine
    finally:
        engine.gate.set()
        await server.close()


@asynccontextmanager
async def engine_client(
    url: str, api_key: str | None = "internal-key", **timeouts: float
) -> AsyncIterator[EngineClient]:
    values = {"connect_timeout_s": SHORT, "first_token_timeout_s": SHORT, "idle_timeout_s": SHORT, **timeouts}
    client = EngineClient(EngineClientConfig(base_url=url + "/", api_key=api_key, **values))
    try:
        yield client
    finally:
        await client.aclose()


async def read_into(stream: EngineStream, received: list[bytes]) -> None:
    """Every read in order, kept in ``received`` even when the stream then fails."""
    async for data in stream.reads():
        received.append(data)


async def read_all(stream: EngineStream) -> bytes:
    received: list[bytes] = []
    await read_into(stream, received)
    return b"".join(received)


# --- streaming ----------------------------------------------------------------------------------------------


async def test_chunks_are_read_as_they_arrive() -> None:
    engine = Engine()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await engine.start_sse(request)
        await response.write(STREAM_BYTES[0])
        await engine.park()  # the rest is sent only after the client has seen the first chunk
        await response.write(STREAM_BYTES[1])
        await response.write_eof()
        return response

    async with serve({PATH: handler}, engine), engine_client(engine.url, idle_timeout_s=BOUND) as client:
        stream = await client.open_stream(PATH, BODY)
        reads = stream.reads()
        assert await anext(reads) == STREAM_BYTES[0]
        engine.gate.set()
        rest = b"".join([data async for data in reads])
        assert rest == STREAM_BYTES[1]
        await stream.aclose()
        await stream.aclose()  # idempotent


async def test_request_carries_the_body_and_the_internal_key() -> None:
    engine = Engine()
    async with serve({PATH: engine.full_stream}, engine), engine_client(engine.url) as client:
        stream = await client.open_stream(
            PATH, BODY, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        )
        assert await read_all(stream) == b"".join(STREAM_BYTES)
        await stream.aclose()
    headers = engine.headers[0]
    assert headers["Authorization"] == "Bearer internal-key"
    assert headers["Content-Type"] == "application/json"
    assert headers["traceparent"].startswith("00-1111")
    assert "Accept-Encoding" not in headers  # bodies are relayed raw: never invite compression
    assert engine.bodies == [BODY]


async def test_no_key_no_authorization_header() -> None:
    engine = Engine()
    async with (
        serve({PATH: engine.full_stream}, engine),
        engine_client(engine.url, api_key=None) as client,
    ):
        stream = await client.open_stream(PATH, BODY)
        await read_all(stream)
        await stream.aclose()
    assert "Authorization" not in engine.headers[0]


# --- timeouts -----------------------------------------------------------------------------------------------


@contextmanager
def listener_that_never_accepts() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout() -> None:
    with listener_that_never_accepts() as port:
        async with engine_client(f"http://127.0.0.1:{port}", first_token_timeout_s=BOUND) as client:
            with pytest.raises(EngineTimeout) as info:
                await client.open_stream(PATH, BODY)
    assert info.value.phase == "connect"


async def test_first_token_timeout_before_the_headers() -> None:
    engine = Engine()
    async with serve({PATH: engine.hang}, engine), engine_client(engine.url) as client:
        with pytest.raises(EngineTimeout) as info:
            await client.open_stream(PATH, BODY)
    assert info.value.phase == "first token"


async def test_first_token_timeout_after_the_headers() -> None:
    engine = Engine()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await engine.start_sse(request)
        await engine.park()
        return response

    async with serve({PATH: handler}, engine), engine_client(engine.url) as client:
        stream = await client.open_stream(PATH, BODY)
        with pytest.raises(EngineTimeout) as info:
            await read_all(stream)
        await stream.aclose()
    assert info.value.phase == "first token"


async def test_idle_timeout_between_chunks() -> None:
    engine = Engine()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await engine.start_sse(request)
        await response.write(STREAM_BYTES[0])
        await engine.park()
        return response

    async with (
        serve({PATH: handler}, engine),
        engine_client(engine.url, first_token_timeout_s=BOUND) as client,
    ):
        stream = await client.open_stream(PATH, BODY)
        received: list[bytes] = []
        with pytest.raises(EngineTimeout) as info:
            await read_into(stream, received)
        await stream.aclose()
    assert info.value.phase == "idle"
    assert received == [STREAM_BYTES[0]]


# --- failures -----------------------------------------------------------------------------------------------


async def test_connection_closed_mid_stream_is_unavailable() -> None:
    engine = Engine()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await engine.start_sse(request)
        await response.write(STREAM_BYTES[0])
        assert request.transport is not None
        request.transport.close()  # the engine process dies half-way through the body
        return response

    async with serve({PATH: handler}, engine), engine_client(engine.url, idle_timeout_s=BOUND) as client:
        stream = await client.open_stream(PATH, BODY)
        received: list[bytes] = []
        with pytest.raises(EngineUnavailable, match="stream broken"):
            await read_into(stream, received)
        await stream.aclose()
    assert b"".join(received) == STREAM_BYTES[0]


async def test_refused_connection_is_unavailable() -> None:
    async with engine_client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(EngineUnavailable, match="unreachable"):
            await client.open_stream(PATH, BODY)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422, 429, 500, 503])
async def test_error_status_before_streaming(status: int) -> None:
    body = wire.error_body("x" * 10000, status)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type="application/json")

    async with serve({PATH: handler}) as engine, engine_client(engine.url) as client:
        with pytest.raises(EngineHTTPError) as info:
            await client.open_stream(PATH, BODY)
    assert info.value.status == status
    assert info.value.body == body[:4096]


# --- aborts and connection reuse --------------------------------------------------------------------------


async def test_closing_a_half_read_stream_closes_the_connection() -> None:
    engine = Engine()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await engine.start_sse(request)
        await response.write(STREAM_BYTES[0])
        await engine.park()
        await response.write(STREAM_BYTES[1])
        return response

    async with (
        serve({PATH: handler, "/v1/models": engine.models}, engine),
        engine_client(engine.url, idle_timeout_s=BOUND) as client,
    ):
        stream = await client.open_stream(PATH, BODY)
        assert await anext(stream.reads()) == STREAM_BYTES[0]
        await stream.aclose()
        # the engine sees the disconnect (vLLM aborts the generation on it)
        await asyncio.wait_for(engine.disconnected.wait(), BOUND)
        await client.get("/v1/models")
    assert engine.peers[1] != engine.peers[0]  # the dropped connection was not reused


async def test_a_fully_read_stream_leaves_its_connection_for_reuse() -> None:
    engine = Engine()
    routes: dict[str, Handler] = {
        PATH: engine.full_stream,
        "/v1/models": engine.models,
    }
    async with serve(routes, engine), engine_client(engine.url) as client:
        for _ in range(2):
            stream = await client.open_stream(PATH, BODY)
            await read_all(stream)
            await stream.aclose()
        await client.get("/v1/models")
    assert not engine.disconnected.is_set()
    assert len(set(engine.peers)) == 1


async def test_an_error_answer_leaves_its_connection_for_reuse() -> None:
    engine = Engine()

    async def refuse(request: web.Request) -> web.StreamResponse:
        await engine.seen(request)
        return web.Response(status=400, body=wire.error_body("bad", 400), content_type="application/json")

    async with (
        serve({PATH: refuse, "/v1/models": engine.models}, engine),
        engine_client(engine.url) as client,
    ):
        with pytest.raises(EngineHTTPError):
            await client.open_stream(PATH, BODY)
        await client.get("/v1/models")
    assert len(set(engine.peers)) == 1


# --- retarget, health, get_json -----------------------------------------------------------------------------


async def test_retarget_moves_requests_and_key_to_the_new_engine() -> None:
    old, new = Engine(), Engine()
    async with (
        serve({"/v1/models": old.models}, old),
        serve({"/v1/models": new.models}, new),
        engine_client(old.url, api_key="old-key") as client,
    ):
        await client.get_json("/v1/models")
        client.retarget(new.url, "new-key")
        assert client.config.base_url == new.url
        assert client.config.connect_timeout_s == SHORT
        await client.get_json("/v1/models")
        client.retarget(new.url, None)
        await client.get_json("/v1/models")
    assert [h["Authorization"] for h in old.headers] == ["Bearer old-key"]
    assert new.headers[0]["Authorization"] == "Bearer new-key"
    assert "Authorization" not in new.headers[1]


async def test_retarget_before_first_use() -> None:
    engine = Engine()
    async with (
        serve({"/v1/models": engine.models}, engine),
        engine_client(f"http://127.0.0.1:{free_port()}", api_key="old") as client,
    ):
        client.retarget(engine.url, "fresh")
        await client.get_json("/v1/models")
    assert engine.headers[0]["Authorization"] == "Bearer fresh"


@pytest.mark.parametrize(("status", "expected"), [(200, None), (503, "engine /health returned 503")])
async def test_health_by_status(status: int, expected: str | None) -> None:
    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status)

    async with serve({"/health": health}) as engine, engine_client(engine.url) as client:
        assert await client.health() == expected


async def test_health_of_an_unreachable_engine() -> None:
    async with engine_client(f"http://127.0.0.1:{free_port()}") as client:
        reason = await client.health()
    assert reason is not None
    assert "unreachable" in reason


async def test_health_of_a_hung_engine() -> None:
    engine = Engine()
    async with serve({"/health": engine.hang}, engine), engine_client(engine.url) as client:
        assert await client.health(timeout_s=SHORT) == "engine request timeout"


async def test_get_json() -> None:
    engine = Engine()
    async with (
        serve({"/v1/models": engine.models}, engine),
        engine_client(engine.url) as client,
    ):
        listing = await client.get_json("/v1/models")
    assert [card["id"] for card in listing["data"]] == ["qwen3-8b"]
    assert engine.headers[0]["Authorization"] == "Bearer internal-key"


async def test_get_json_error_status() -> None:
    body = wire.error_body("nope", 404)

    async def missing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, body=body, content_type="application/json")

    async with serve({"/v1/models": missing}) as engine, engine_client(engine.url) as client:
        with pytest.raises(EngineHTTPError) as info:
            await client.get_json("/v1/models")
    assert (info.value.status, info.value.body) == (404, body)


async def test_get_timeout_and_unreachable() -> None:
    engine = Engine()
    async with serve({"/v1/models": engine.hang}, engine), engine_client(engine.url) as client:
        with pytest.raises(EngineTimeout) as info:
            await client.get("/v1/models", timeout_s=SHORT)
    assert info.value.phase == "request"
    async with engine_client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(EngineUnavailable):
            await client.get_json("/v1/models")

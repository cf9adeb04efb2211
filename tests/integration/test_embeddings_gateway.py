"""``/v1/embeddings`` and several engines, through the running gateway with the official openai SDK.

Two fake engines stand behind one gateway (``--upstream`` twice): one serves a chat model, the other an
embedding model. Each request must land on the engine that serves its model.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import AppParts
from gateway.auth.keystore import KeyFile, mint_token, signing_key
from gateway.telemetry import SPAN_ADMISSION, SPAN_AUTH, SPAN_INPUT_GUARD, Telemetry
from tests.fakes.engine import FakeEngine
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway, wait_for

CHAT = "qwen3-8b"
EMBED = "all-minilm-l6-v2"
DIM = 384


@pytest.fixture
def chat_engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=(CHAT,)) as engine:
        yield engine


@pytest.fixture
def embed_engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=(), embedding_models=(EMBED,), embedding_dim=DIM) as engine:
        yield engine


@pytest.fixture
def gateway(chat_engine: FakeEngine, embed_engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    upstreams = f"{chat_engine.url},{embed_engine.url}"
    with run_gateway(gateway_settings(tmp_path, upstreams, models_refresh=0.2)) as running:
        yield running


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0, timeout=20) as sdk:
        yield sdk


def _sent(engine: FakeEngine, path: str) -> list[Any]:
    """The bodies the engine received on ``path`` (its model list is read in the background too)."""
    return [r.json for r in list(engine.requests) if r.path == path]


def _error(info: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = info.value.body
    assert isinstance(body, dict)
    return body


# --- embeddings ------------------------------------------------------------------------------------------


def test_float_embeddings_of_a_list(
    client: openai.OpenAI, embed_engine: FakeEngine, chat_engine: FakeEngine
) -> None:
    result = client.embeddings.create(
        model=EMBED, input=["annual leave", "vacation days"], encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == DIM for d in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.model == EMBED and result.object == "list"
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens == result.usage.prompt_tokens
    upstream = _sent(embed_engine, "/v1/embeddings")[-1]
    assert upstream == {
        "model": EMBED,
        "input": ["annual leave", "vacation days"],
        "encoding_format": "float",
    }
    assert _sent(chat_engine, "/v1/embeddings") == [], "embeddings never reach the chat engine"


def test_base64_embeddings_decode_to_the_float_vector(
    client: openai.OpenAI, embed_engine: FakeEngine
) -> None:
    floats = client.embeddings.create(model=EMBED, input="sick leave", encoding_format="float")
    raw = httpx.post(
        client.base_url.join("embeddings").__str__(),
        json={"model": EMBED, "input": "sick leave", "encoding_format": "base64"},
        timeout=10,
    )
    assert raw.status_code == 200
    answer = raw.json()
    assert set(answer) == {"object", "data", "model", "usage"}, "only OpenAI's fields"
    assert set(answer["data"][0]) == {"object", "index", "embedding"}
    packed = base64.b64decode(answer["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert vector == pytest.approx(floats.data[0].embedding, rel=1e-6)
    # the SDK's own default: it asks for base64 and decodes it
    default = client.embeddings.create(model=EMBED, input="sick leave")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    assert _sent(embed_engine, "/v1/embeddings")[-1]["encoding_format"] == "base64"


def test_token_arrays_are_refused(client: openai.OpenAI, embed_engine: FakeEngine) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED, input=[[101, 2023, 102]])
    assert "token-id arrays are refused" in _error(info)["message"]
    assert _sent(embed_engine, "/v1/embeddings") == []


def test_blocked_word_in_an_input_is_400(client: openai.OpenAI, embed_engine: FakeEngine) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED, input=["annual leave", "status of project nightjar"])
    error = _error(info)
    assert error["code"] == "content_filter"
    assert error["param"] == "input[1]"
    assert _sent(embed_engine, "/v1/embeddings") == [], "a blocked input never reaches the engine"


def test_masked_input_is_embedded_masked(client: openai.OpenAI, embed_engine: FakeEngine) -> None:
    client.embeddings.create(model=EMBED, input="write to alice@example.com")
    sent = _sent(embed_engine, "/v1/embeddings")[-1]["input"]
    assert "alice@example.com" not in sent
    assert sent.startswith("write to ") and len(sent) == len("write to alice@example.com")


def test_usage_settles_the_token_reservation(client: openai.OpenAI) -> None:
    texts = ["parental leave " * 20]
    first = client.embeddings.with_raw_response.create(model=EMBED, input=texts)
    used = first.parse().usage.prompt_tokens
    second = client.embeddings.with_raw_response.create(model=EMBED, input=texts)
    remaining = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (first, second)]
    # Both reserved the same estimate; between them, the first was settled at the engine's usage.
    assert remaining[0] - remaining[1] == used


@pytest.fixture
def builtin(chat_engine: FakeEngine, embed_engine: FakeEngine, tmp_path: Path) -> Iterator[RunningGateway]:
    settings = gateway_settings(
        tmp_path,
        f"{chat_engine.url},{embed_engine.url}",
        auth="builtin",
        auth_key_file=tmp_path / "issuer-keys.json",
        auth_secrets_file=tmp_path / "client-secrets.yaml",
    )
    with run_gateway(settings) as running:
        yield running


def _sdk(gateway: RunningGateway, *scopes: str) -> openai.OpenAI:
    """An SDK client with a built-in issuer token of a client known only by its ``scopes``."""
    key = signing_key(KeyFile(gateway.settings.auth.key_file).load())
    token = mint_token(
        key,
        issuer=gateway.url,
        audience="menshen",
        client_id="svc-x",
        scopes=list(scopes),
        ttl_s=60,
        now=time.time(),
    )
    return openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0, timeout=20)


def test_embeddings_scope_is_its_own(builtin: RunningGateway) -> None:
    with _sdk(builtin, "llm.chat") as chat_only, pytest.raises(openai.PermissionDeniedError) as info:
        chat_only.embeddings.create(model=EMBED, input="x")
    assert "embeddings endpoint" in _error(info)["message"]
    with _sdk(builtin, "llm.embeddings") as embed:
        assert len(embed.embeddings.create(model=EMBED, input="x").data) == 1
        with pytest.raises(openai.PermissionDeniedError):
            embed.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])


def test_models_lists_the_union_filtered_by_grant(builtin: RunningGateway) -> None:
    with _sdk(builtin, "llm.chat", "llm.embeddings", "llm.models") as both:
        assert sorted(m.id for m in both.models.list()) == sorted([CHAT, EMBED])
    with _sdk(builtin, "llm.embeddings", "llm.models") as embed:
        assert [m.id for m in embed.models.list()] == [EMBED]


# --- several engines -------------------------------------------------------------------------------------


def test_each_request_lands_on_the_engine_serving_its_model(
    client: openai.OpenAI, chat_engine: FakeEngine, embed_engine: FakeEngine
) -> None:
    reply = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the fake engine."
    client.embeddings.create(model=EMBED, input="hi")
    assert [b["model"] for b in _sent(chat_engine, "/v1/chat/completions")] == [CHAT]
    assert [b["model"] for b in _sent(embed_engine, "/v1/embeddings")] == [EMBED]
    assert _sent(embed_engine, "/v1/chat/completions") == _sent(chat_engine, "/v1/embeddings") == []


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert _error(info)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="no-such-embedder", input="hi")
    assert _error(info)["code"] == "model_not_found"


def test_a_model_added_to_an_engine_is_picked_up(
    gateway: RunningGateway, client: openai.OpenAI, embed_engine: FakeEngine
) -> None:
    embed_engine.embedding_models = (EMBED, "qwen3-embedding-0.6b")
    wait_for(lambda: "qwen3-embedding-0.6b" in {m.id for m in client.models.list()}, within=10)
    result = client.embeddings.create(model="qwen3-embedding-0.6b", input="hi")
    assert result.model == "qwen3-embedding-0.6b"
    assert _sent(embed_engine, "/v1/embeddings")[-1]["model"] == "qwen3-embedding-0.6b"


def test_readyz_shows_every_engine(
    gateway: RunningGateway, chat_engine: FakeEngine, embed_engine: FakeEngine
) -> None:
    ready = httpx.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    shown = {(e["url"], tuple(e["models"]), e["up"]) for e in ready.json()["upstreams"]}
    assert shown == {(chat_engine.url, (CHAT,), True), (embed_engine.url, (EMBED,), True)}


# --- spans, metrics and audit ----------------------------------------------------------------------------


def test_spans_metrics_and_audit_in_the_chat_shapes(embed_engine: FakeEngine, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parts = AppParts(telemetry=Telemetry(provider))

    def servers() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]

    try:
        with run_gateway(gateway_settings(tmp_path, embed_engine.url), parts) as gateway:
            with openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0) as sdk:
                usage = sdk.embeddings.create(model=EMBED, input=["a", "b"]).usage
                with pytest.raises(openai.BadRequestError):
                    sdk.embeddings.create(model=EMBED, input="about project nightjar")
            wait_for(lambda: len(servers()) == 2, within=5)
            metrics = httpx.get(gateway.url + "/metrics", timeout=5).text
            audit = gateway.settings.audit_path.read_text(encoding="utf-8")
    finally:
        provider.shutdown()
    ok, blocked = servers()
    attrs = dict(ok.attributes or {})
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.request.model"] == EMBED
    assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attrs["menshen.client_id"] == "anonymous"
    names = {s.name for s in exporter.get_finished_spans() if s.context.trace_id == ok.context.trace_id}
    assert names >= {SPAN_AUTH, SPAN_ADMISSION, SPAN_INPUT_GUARD, f"embeddings {EMBED}"}
    (engine_span,) = [s for s in exporter.get_finished_spans() if s.name == f"embeddings {EMBED}"]
    assert engine_span.kind == SpanKind.CLIENT
    assert dict(blocked.attributes or {})["http.response.status_code"] == 400
    assert 'menshen_requests_total{client="anonymous",route="/v1/embeddings",status="200"} 1.0' in metrics
    assert 'route="/v1/embeddings",status="400"' in metrics
    assert '"rule":"words.codenames"' in audit.replace(" ", "")
    assert "nightjar" not in audit, "the audit trail holds no content"


class _StallingEngine(BaseHTTPRequestHandler):
    """Lists one embedding model; holds every ``/v1/embeddings`` open until its client closes the connection."""

    closed: threading.Event
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": EMBED, "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.connection.settimeout(30)
        with contextlib.suppress(OSError):
            if self.connection.recv(1) == b"":  # the gateway closed its side
                self.closed.set()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_client_disconnect_closes_the_engine_call(tmp_path: Path) -> None:
    handler = type("Stalling", (_StallingEngine,), {"closed": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # The engine timeout is far off: only the client's going away can close the engine call in time.
        with run_gateway(gateway_settings(tmp_path, url, first_token_timeout=120.0)) as gateway:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(gateway.api + "/embeddings", json={"model": EMBED, "input": "x"}, timeout=1.0)
            wait_for(handler.closed.is_set, within=20)
    finally:
        server.shutdown()
        server.server_close()

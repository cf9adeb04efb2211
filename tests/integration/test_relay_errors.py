"""Every bad input and upstream failure gets its status in the OpenAI error shape, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway
from tests.support.ports import free_port

CHAT = "/chat/completions"


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    return error  # type: ignore[no-any-return]


def _post(gateway: RunningGateway, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.api + CHAT,
        content=content,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=10,
    )


def test_malformed_json(gateway: RunningGateway) -> None:
    error = _assert_openai_error(_post(gateway, b'{"model": "qwen3-8b", "messages": ['), 400)
    assert error["code"] == "invalid_json"


def test_wrong_type(gateway: RunningGateway) -> None:
    error = _assert_openai_error(
        _post(gateway, b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}'), 400
    )
    assert error["param"] == "model"


def test_missing_field(gateway: RunningGateway) -> None:
    error = _assert_openai_error(_post(gateway, b'{"model": "qwen3-8b"}'), 400)
    assert "messages" in str(error["message"])


def test_out_of_range_value(gateway: RunningGateway) -> None:
    body = b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "x"}], "temperature": 9}'
    error = _assert_openai_error(_post(gateway, body), 400)
    assert error["param"] == "temperature"


def test_body_over_limit(gateway: RunningGateway) -> None:
    big = b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "' + b"a" * (1024 * 1024) + b'"}]}'
    _assert_openai_error(_post(gateway, big), 413)


def test_body_over_limit_chunked(gateway: RunningGateway) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "'
        for _ in range(300):
            yield b"a" * 4096
        yield b'"}]}'

    response = httpx.post(
        gateway.api + CHAT, content=body(), headers={"content-type": "application/json"}, timeout=10
    )
    _assert_openai_error(response, 413)


def test_unknown_route_and_method(gateway: RunningGateway) -> None:
    _assert_openai_error(httpx.get(gateway.api + "/nope", timeout=5), 404)
    _assert_openai_error(httpx.get(gateway.api + CHAT, timeout=5), 405)


def test_engine_down_is_503(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, f"http://127.0.0.1:{free_port()}", connect_timeout=1.0)
    with run_gateway(settings) as gateway:
        response = _post(gateway, b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "x"}]}')
        error = _assert_openai_error(response, 503)
        assert error["code"] == "engine_unavailable"
        ready = httpx.get(gateway.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["reasons"]
        assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(("engine_status", "expected"), [(400, 400), (404, 404), (500, 502), (503, 503)])
def test_engine_status_mapped(
    fake_engine: FakeEngine, client: openai.OpenAI, engine_status: int, expected: int
) -> None:
    fake_engine.scripts["fail"] = Script.of("x", http_status=engine_status, error_message="engine says no")
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "[[script:fail]]"}]
        )
    assert info.value.status_code == expected


def test_engine_timeout_is_504(fake_engine: FakeEngine, tmp_path: Path) -> None:
    fake_engine.scripts["slow"] = Script.of("late", first_token_delay=3.0)
    with run_gateway(gateway_settings(tmp_path, fake_engine.url, first_token_timeout=0.5)) as gateway:
        body = b'{"model": "qwen3-8b", "messages": [{"role": "user", "content": "[[script:slow]]"}]}'
        error = _assert_openai_error(_post(gateway, body), 504)
        assert error["code"] == "upstream_timeout"


def test_mid_stream_error_event(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    fake_engine.scripts["broken"] = Script.of("one two three four five", error_after=2)
    stream = client.chat.completions.create(
        model="qwen3-8b", messages=[{"role": "user", "content": "[[script:broken]]"}], stream=True
    )
    received: list[str] = []

    def drain() -> None:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as info:
        drain()
    # What was released before the failure is a prefix of the engine's text (the guard may hold a tail).
    assert "one two".startswith("".join(received))
    assert "incomplete" in info.value.message


def test_mid_stream_connection_drop(fake_engine: FakeEngine, client: openai.OpenAI) -> None:
    fake_engine.scripts["drop"] = Script.of("one two three four five", close_after=3)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "[[script:drop]]"}], stream=True
        ):
            pass

"""The error mapping as tables: decode failures and engine failures to the gateway's OpenAI-shaped errors."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from engine.client import EngineError, EngineHTTPError, EngineTimeout, EngineUnavailable
from gateway.errors import (
    BodyTooLarge,
    ContentFiltered,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimitExceeded,
    ServiceUnavailable,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    error_json,
)
from gateway.protocol import ChatCompletionRequest, CompletionRequest, decode_request
from gateway.relay.errors import decode_error, engine_error
from tests.fakes import wire

ENVELOPE_KEYS = {"message", "type", "param", "code"}


def envelope(error: GatewayError) -> dict[str, Any]:
    """The JSON a client receives, checked to have exactly OpenAI's error shape."""
    body = json.loads(error.encode())
    assert set(body) == {"error"}
    assert set(body["error"]) == ENVELOPE_KEYS
    return dict(body["error"])


def chat_body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x"}], **fields})


def decode_failure(body: bytes, kind: type[ChatCompletionRequest | CompletionRequest]) -> GatewayError:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)) as info:
        decode_request(body, kind)
    assert isinstance(info.value, msgspec.DecodeError | msgspec.ValidationError)
    return decode_error(info.value)


# body, expected code, expected param
DECODE_TABLE: list[tuple[str, bytes, str, str | None]] = [
    ("truncated JSON", b'{"model": "m"', "invalid_json", None),
    ("not JSON", b"model=m", "invalid_json", None),
    ("empty body", b"", "invalid_json", None),
    ("trailing bytes", chat_body() + b"}", "invalid_json", None),
    ("top-level unknown field", chat_body(foo=1), "unknown_field", "foo"),
    ("engine-only field", chat_body(chat_template="x"), "unknown_field", "chat_template"),
    ("vllm_xargs", chat_body(vllm_xargs={}), "unknown_field", "vllm_xargs"),
    (
        "unknown field in a message",
        msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "x", "foo": 1}]}),
        "unknown_field",
        "messages[0].foo",
    ),
    (
        "unknown field in a content part",
        msgspec.json.encode(
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "foo": 1}]}],
            }
        ),
        "unknown_field",
        "messages[0].content[0].foo",
    ),
    (
        "unknown field in stream_options",
        chat_body(stream_options={"include_usage": True, "continuous_usage_stats": True}),
        "unknown_field",
        "stream_options.continuous_usage_stats",
    ),
    (
        "unknown field in chat_template_kwargs",
        chat_body(chat_template_kwargs={"tools": []}),
        "unknown_field",
        "chat_template_kwargs.tools",
    ),
    ("temperature too high", chat_body(temperature=3), "invalid_value", "temperature"),
    ("top_p zero", chat_body(top_p=0), "invalid_value", "top_p"),
    ("n above one", chat_body(n=2), "invalid_value", "n"),
    ("stop sequence too long", chat_body(stop=["a", "b" * 257]), "invalid_value", "stop[1]"),
    ("too many stops", chat_body(stop=["a"] * 17), "invalid_value", "stop"),
    ("model not a string", chat_body(model=5), "invalid_value", "model"),
    ("stream not a bool", chat_body(stream="yes"), "invalid_value", "stream"),
    ("no messages", chat_body(messages=[]), "invalid_value", "messages"),
    (
        "role not allowed",
        chat_body(messages=[{"role": "function", "content": "x"}]),
        "invalid_value",
        "messages[0].role",
    ),
    (
        "image part",
        chat_body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        "invalid_value",
        "messages[0].content[0].type",
    ),
    ("body is an array", b"[]", "invalid_value", None),
]


@pytest.mark.parametrize(("case", "body", "code", "param"), DECODE_TABLE)
def test_decode_error_table(case: str, body: bytes, code: str, param: str | None) -> None:
    error = decode_failure(body, ChatCompletionRequest)
    assert isinstance(error, InvalidRequest)
    assert error.status == 400
    assert envelope(error) == {
        "message": error.message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    if code == "unknown_field":
        assert error.message == f"Unrecognized request argument supplied: {param}"


def test_decode_error_names_a_missing_field_in_the_message() -> None:
    error = decode_failure(b'{"messages": [{"role": "user", "content": "x"}]}', ChatCompletionRequest)
    assert error.code == "invalid_value"
    assert "`model`" in error.message


def test_decode_error_on_text_completions() -> None:
    error = decode_failure(b'{"model": "m", "prompt": "p", "echo": true}', CompletionRequest)
    assert (error.code, error.param) == ("unknown_field", "echo")


def test_decode_error_never_echoes_the_prompt() -> None:
    secret = "my-private-prompt-text"
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": secret, "x": 1}]})
    assert secret.encode() not in decode_failure(body, ChatCompletionRequest).encode()
    body = msgspec.json.encode({"model": "m", "prompt": [secret, secret]})
    assert secret.encode() not in decode_failure(body, CompletionRequest).encode()


LONG = "L" * 2000

# engine failure, expected class, status, type, code, the message (or a part of it)
ENGINE_TABLE: list[tuple[str, EngineError, type[GatewayError], int, str, str, str]] = [
    ("connect timeout", EngineTimeout("connect"), UpstreamTimeout, 504, "timeout_error", "upstream_timeout", "connect timeout"),
    ("first token timeout", EngineTimeout("first token"), UpstreamTimeout, 504, "timeout_error", "upstream_timeout", "first token timeout"),
    ("idle timeout", EngineTimeout("idle"), UpstreamTimeout, 504, "timeout_error", "upstream_timeout", "idle timeout"),
    ("unavailable", EngineUnavailable("refused"), ServiceUnavailable, 503, "service_unavailable", "engine_unavailable", "unavailable"),
    ("any other engine error", EngineError("x"), ServiceUnavailable, 503, "service_unavailable", "engine_unavailable", "unavailable"),
    ("400 with vLLM message", EngineHTTPError(400, wire.error_body("max_tokens is too large", 400)), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "max_tokens is too large"),
    ("400 without message", EngineHTTPError(400, b""), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "The engine refused the request."),
    ("400 flat body", EngineHTTPError(400, b'{"message": "flat text", "type": "BadRequestError"}'), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "flat text"),
    ("400 error as a string", EngineHTTPError(400, b'{"error": "oops"}'), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "The engine refused the request."),
    ("400 body cut mid-JSON", EngineHTTPError(400, wire.error_body("x" * 5000, 400)[:4096]), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "The engine refused the request."),
    ("422 with message", EngineHTTPError(422, wire.error_body("bad field", 422)), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "bad field"),
    ("422 without message", EngineHTTPError(422, b"not json"), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "The engine refused the request."),
    ("404 with message", EngineHTTPError(404, wire.error_body("The model `x` does not exist.", 404)), NotFound, 404, "not_found_error", "model_not_found", "The model `x` does not exist."),
    ("404 without message", EngineHTTPError(404, b""), NotFound, 404, "not_found_error", "model_not_found", "The model does not exist on the engine."),
    ("413 with message", EngineHTTPError(413, wire.error_body("too big", 413)), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "too big"),
    ("413 without message", EngineHTTPError(413, b""), InvalidRequest, 400, "invalid_request_error", "engine_rejected", "The request is too large for the engine."),
    ("401", EngineHTTPError(401, wire.UNAUTHORIZED_BODY), UpstreamError, 502, "upstream_error", "upstream_error", "could not authenticate"),
    ("403", EngineHTTPError(403, wire.error_body("forbidden", 403)), UpstreamError, 502, "upstream_error", "upstream_error", "could not authenticate"),
    ("429", EngineHTTPError(429, b""), ServiceUnavailable, 503, "service_unavailable", "engine_overloaded", "overloaded"),
    ("503", EngineHTTPError(503, wire.error_body("busy", 503)), ServiceUnavailable, 503, "service_unavailable", "engine_overloaded", "overloaded"),
    ("504", EngineHTTPError(504, b""), UpstreamTimeout, 504, "timeout_error", "upstream_timeout", "timed out"),
    ("500", EngineHTTPError(500, wire.error_body("CUDA error: secret internals", 500)), UpstreamError, 502, "upstream_error", "upstream_error", "HTTP 500"),
    ("502", EngineHTTPError(502, b""), UpstreamError, 502, "upstream_error", "upstream_error", "HTTP 502"),
    ("418", EngineHTTPError(418, b""), UpstreamError, 502, "upstream_error", "upstream_error", "HTTP 418"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "exc", "cls", "status", "type_", "code", "message"), ENGINE_TABLE)
def test_engine_error_table(
    case: str, exc: EngineError, cls: type[GatewayError], status: int, type_: str, code: str, message: str
) -> None:
    error = engine_error(exc)
    assert type(error) is cls
    assert error.status == status
    body = envelope(error)
    assert (body["type"], body["code"], body["param"]) == (type_, code, None)
    assert message in body["message"]


def test_engine_internals_of_5xx_are_not_relayed() -> None:
    error = engine_error(EngineHTTPError(500, wire.error_body("Traceback: /opt/vllm/engine.py", 500)))
    assert b"Traceback" not in error.encode()
    assert b"vllm" not in error.encode()


def test_oversized_engine_messages_are_truncated() -> None:
    error = engine_error(EngineHTTPError(400, wire.error_body(LONG, 400)))
    assert error.message == "L" * 500


# class, status, type, code
CLASS_TABLE: list[tuple[type[GatewayError], int, str, str | None]] = [
    (GatewayError, 500, "internal_error", None),
    (InvalidRequest, 400, "invalid_request_error", None),
    (BodyTooLarge, 413, "invalid_request_error", "request_too_large"),
    (Unauthenticated, 401, "authentication_error", "invalid_token"),
    (PermissionDenied, 403, "permission_error", "insufficient_scope"),
    (NotFound, 404, "not_found_error", "not_found"),
    (RateLimitExceeded, 429, "rate_limit_error", "rate_limit_exceeded"),
    (ServiceUnavailable, 503, "service_unavailable", "service_unavailable"),
    (UpstreamTimeout, 504, "timeout_error", "upstream_timeout"),
]


@pytest.mark.parametrize(("cls", "status", "type_", "code"), CLASS_TABLE)
def test_error_classes(cls: type[GatewayError], status: int, type_: str, code: str | None) -> None:
    error = cls("Something went wrong.")
    assert error.status == status
    assert error.headers == {}
    assert envelope(error) == {"message": "Something went wrong.", "type": type_, "param": None, "code": code}
    assert str(error) == "Something went wrong."


@pytest.mark.parametrize(("cls", "status", "type_", "code"), CLASS_TABLE)
def test_param_code_and_headers_override(
    cls: type[GatewayError], status: int, type_: str, code: str | None
) -> None:
    headers = {"retry-after": "3"}
    error = cls("m", param="temperature", code="custom", headers=headers)
    headers["retry-after"] = "changed"  # the error keeps its own copy
    assert error.headers == {"retry-after": "3"}
    assert envelope(error) == {"message": "m", "type": type_, "param": "temperature", "code": "custom"}
    assert cls.code == code  # an instance override leaves the class default alone


def test_unauthenticated_and_rate_limited_carry_their_headers() -> None:
    auth = Unauthenticated("Missing token.", headers={"www-authenticate": 'Bearer error="invalid_token"'})
    assert auth.headers == {"www-authenticate": 'Bearer error="invalid_token"'}
    limited = RateLimitExceeded("Too many requests.", headers={"retry-after": "12"})
    assert limited.headers["retry-after"] == "12"


def test_content_filtered_names_the_rule_not_the_text() -> None:
    error = ContentFiltered("words.codenames", "confidential")
    assert isinstance(error, InvalidRequest)
    assert (error.status, error.rule, error.category) == (400, "words.codenames", "confidential")
    body = envelope(error)
    assert body["type"] == "invalid_request_error"
    assert (body["code"], body["param"]) == ("content_filter", "messages")
    assert "'words.codenames'" in body["message"]
    assert "'confidential'" in body["message"]


@pytest.mark.parametrize(("status", "code"), [(502, None), (500, "custom"), (503, "engine_down")])
def test_upstream_error_takes_its_status(status: int, code: str | None) -> None:
    error = UpstreamError("bad gateway", status=status, code=code)
    assert error.status == status
    assert envelope(error)["code"] == (code or "upstream_error")
    assert envelope(error)["type"] == "upstream_error"


def test_error_json_for_framework_errors() -> None:
    body = json.loads(error_json(405, "Method not allowed.", "invalid_request_error", "method_not_allowed"))
    assert body == {
        "error": {
            "message": "Method not allowed.",
            "type": "invalid_request_error",
            "param": None,
            "code": "method_not_allowed",
        }
    }

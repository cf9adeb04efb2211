"""Mapping of decode and engine failures to the gateway's errors (OpenAI shape, no internals)."""

from __future__ import annotations

import re

import msgspec

from engine.client import EngineError, EngineHTTPError, EngineTimeout, EngineUnavailable
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`(?: - at `\$\.?([^`]*)`)?")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")


def decode_error(exc: msgspec.DecodeError | msgspec.ValidationError) -> InvalidRequest:
    """A 400 naming the offending field, from msgspec's message (which never contains values)."""
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown:
            name, parent = unknown.group(1), unknown.group(2) or ""
            param = f"{parent}.{name}" if parent else name
            return InvalidRequest(
                f"Unrecognized request argument supplied: {param}", param=param, code="unknown_field"
            )
        at = _AT_PATH.search(message)
        param = at.group(1) if at else None
        return InvalidRequest(f"Invalid request: {message}", param=param or None, code="invalid_value")
    return InvalidRequest(f"The request body is not valid JSON: {message}", code="invalid_json")


def engine_error(exc: EngineError) -> GatewayError:
    if isinstance(exc, EngineTimeout):
        return UpstreamTimeout(f"The engine did not answer in time ({exc.phase} timeout).")
    if isinstance(exc, EngineUnavailable):
        return ServiceUnavailable("The model engine is unavailable. Retry later.", code="engine_unavailable")
    if isinstance(exc, EngineHTTPError):
        return _engine_status(exc)
    return ServiceUnavailable("The model engine is unavailable. Retry later.", code="engine_unavailable")


def _engine_status(exc: EngineHTTPError) -> GatewayError:
    message = _engine_message(exc.body)
    if exc.status == 404:
        return NotFound(message or "The model does not exist on the engine.", code="model_not_found")
    if exc.status in (400, 422):
        return InvalidRequest(message or "The engine refused the request.", code="engine_rejected")
    if exc.status == 413:
        return InvalidRequest(message or "The request is too large for the engine.", code="engine_rejected")
    if exc.status in (401, 403):
        # The internal key is ours, not the caller's: a gateway misconfiguration.
        return UpstreamError("The gateway could not authenticate to the engine.", status=502)
    if exc.status in (429, 503):
        return ServiceUnavailable("The model engine is overloaded. Retry later.", code="engine_overloaded")
    if exc.status == 504:
        return UpstreamTimeout("The engine timed out.")
    return UpstreamError(f"The engine failed with HTTP {exc.status}.", status=502)


class _EngineErrorBody(msgspec.Struct):
    message: str = ""


class _EngineErrorEnvelope(msgspec.Struct):
    error: _EngineErrorBody | None = None
    message: str = ""


def _engine_message(body: bytes) -> str:
    """vLLM's own error text (validation messages about lengths and parameters; never the prompt)."""
    try:
        parsed = msgspec.json.decode(body, type=_EngineErrorEnvelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""
    text = parsed.error.message if parsed.error else parsed.message
    return text[:500]


__all__ = ["decode_error", "engine_error"]

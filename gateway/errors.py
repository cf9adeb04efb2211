"""Every error the gateway answers with, as one exception tree rendered in the OpenAI error shape.

    GatewayError                      any status, {"error": {"message", "type", "param", "code"}}
    ├── InvalidRequest                400 invalid_request_error
    │   └── ContentFiltered           400 code=content_filter (rule id, never the matched text)
    ├── BodyTooLarge                  413
    ├── Unauthenticated               401 + WWW-Authenticate: Bearer error="invalid_token"
    ├── PermissionDenied              403 + WWW-Authenticate: Bearer error="insufficient_scope"
    ├── NotFound                      404
    ├── RateLimitExceeded             429 + Retry-After
    ├── UpstreamError                 the upstream's status mapped (502 for its 5xx)
    ├── ServiceUnavailable            503 (engine down, limiter down in fail_closed, audit sink down)
    └── UpstreamTimeout               504

Messages are written for the caller and never echo a token, a prompt or an output.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class GatewayError(Exception):
    status: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class ContentFiltered(InvalidRequest):
    code = "content_filter"

    def __init__(self, rule: str, category: str, *, param: str = "messages") -> None:
        super().__init__(
            f"The request was blocked by content policy rule '{rule}' (category '{category}').",
            param=param,
        )
        self.rule = rule
        self.category = category


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unauthenticated(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_token"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class RateLimitExceeded(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    type = "upstream_error"
    code = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def error_json(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Encode an error that has no exception class (framework-level errors such as 404/405)."""
    return msgspec.json.encode(ErrorEnvelope(ErrorBody(message, type_, param, code)))


__all__ = [
    "BodyTooLarge",
    "ContentFiltered",
    "ErrorBody",
    "ErrorEnvelope",
    "GatewayError",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "error_json",
]

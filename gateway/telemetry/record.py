"""What one request did, gathered along the flow and recorded once at the end (spans, metrics, audit)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from gateway.errors import GatewayError
from gateway.guardrails.pipeline import Decision
from gateway.telemetry.spans import current_server_span


@dataclass(slots=True)
class RequestRecord:
    route: str
    operation: str
    started: float = field(default_factory=time.perf_counter)
    client_id: str = "-"
    model: str | None = None
    policy_version: str | None = None
    status: int = 200
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    ttft_s: float | None = None
    error: str | None = None
    limit_hit: str | None = None
    auth_failure: str | None = None
    disconnected: bool = False
    decisions: list[Decision] = field(default_factory=list)
    server_span: Span = field(default_factory=current_server_span)  # INVALID_SPAN when untraced
    failure: GatewayError | None = None
    method: str = "POST"
    scope_state: dict[str, Any] | None = (
        None  # the ASGI scope's state, marked once the access line is written
    )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


__all__ = ["RequestRecord"]

"""Records what a request did, once, at its end: span attributes and events, metrics, audit, access log.

The request flow gathers facts into a ``RequestRecord`` and calls ``finish`` (a request that ended before
streaming) or ``finish_stream`` (a relayed stream). Nothing here runs per chunk, and no text is recorded:
decisions carry offsets, and the audit trail only an HMAC of the matched content.
"""

from __future__ import annotations

from opentelemetry.trace import Span

from gateway.errors import GatewayError
from gateway.telemetry.access import ACCESS_LOGGED
from gateway.telemetry.audit import AuditLog
from gateway.telemetry.logging import log_access
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.spans import (
    MENSHEN_CLIENT_ID,
    MENSHEN_POLICY_VERSION,
    Attributes,
    add_decision_event,
    request_attributes,
    response_attributes,
    set_error,
)


class Recorder:
    def __init__(self, metrics: Metrics, audit: AuditLog | None) -> None:
        self.metrics = metrics
        self.audit = audit

    def finish(self, record: RequestRecord, error: GatewayError | None) -> None:
        """A request that ended before its stream: refused or failed."""
        span = record.server_span
        if error is not None:
            record.status = error.status
            record.error = str(error.code) if error.code is not None else error.type
            set_error(span, record.error)
        if span.is_recording():
            span.set_attributes(_request_attributes(record))
        self._close(record)

    def finish_stream(self, record: RequestRecord, span: Span, error: GatewayError | None) -> None:
        """A relayed stream ended (done, cut, failed or disconnected). ``span`` is the stream span."""
        server = record.server_span
        if server.is_recording():
            server.set_attributes(
                response_attributes(
                    _request_attributes(record),
                    input_tokens=record.prompt_tokens,
                    output_tokens=record.completion_tokens,
                    finish_reasons=[record.finish_reason] if record.finish_reason else (),
                    ttft_s=record.ttft_s,
                )
            )
        if span.is_recording():
            for decision in record.decisions:
                if decision.where != "input":
                    add_decision_event(span, decision)
            if error is not None:
                set_error(span, str(error.code))
            span.set_attribute("menshen.disconnected", record.disconnected)
            span.end()
        if record.ttft_s is not None:
            self.metrics.observe_ttft(route=record.route, seconds=record.ttft_s)
        self.metrics.add_tokens(
            client=record.client_id, input_tokens=record.prompt_tokens, output_tokens=record.completion_tokens
        )
        self._close(record)

    def _close(self, record: RequestRecord) -> None:
        metrics = self.metrics
        metrics.observe_request(
            route=record.route, status=record.status, client=record.client_id, duration_s=record.elapsed()
        )
        audit = self.audit
        if record.auth_failure is not None:
            metrics.auth_failure(reason=record.auth_failure)
            if audit is not None:
                audit.record(
                    "auth_failure", client=record.client_id, route=record.route, reason=record.auth_failure
                )
        if record.limit_hit is not None:
            metrics.rate_limit_hit(limit=record.limit_hit)
            if audit is not None:
                audit.record(
                    "rate_limited",
                    client=record.client_id,
                    route=record.route,
                    limit=record.limit_hit,
                    policy_version=record.policy_version,
                )
        for decision in record.decisions:
            if decision.category == "loop":
                if decision.mode == "enforce":
                    metrics.loop_cut(where=decision.where)
            else:
                metrics.guardrail_hit(
                    rule=decision.rule, action=decision.action, mode=decision.mode, where=decision.where
                )
            if self.audit is not None:
                self.audit.record_decision(
                    decision,
                    kind="loop" if decision.category == "loop" else "guardrail",
                    client=record.client_id,
                    policy_version=record.policy_version,
                )
        if self.audit is not None:
            metrics.audit_healthy.set(1 if self.audit.healthy else 0)
        ids = record.server_span.get_span_context()  # an unsampled request has ids too
        log_access(
            method=record.method,
            path=record.route,
            status=record.status if not record.disconnected else 499,
            duration_ms=record.elapsed() * 1000,
            client_id=record.client_id,
            finish_reason=record.finish_reason,
            trace_id=format(ids.trace_id, "032x") if ids.is_valid else None,
        )
        if record.scope_state is not None:
            record.scope_state[ACCESS_LOGGED] = True

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()


def _request_attributes(record: RequestRecord) -> Attributes:
    if record.model is None or record.operation not in ("chat", "text_completion", "embeddings"):
        # Refused before the body was read (auth, size): who and under which policy still matter.
        attrs: Attributes = {MENSHEN_CLIENT_ID: record.client_id}
        if record.policy_version is not None:
            attrs[MENSHEN_POLICY_VERSION] = record.policy_version
        return attrs
    return request_attributes(
        operation=record.operation,
        model=record.model,
        max_tokens=record.max_tokens,
        temperature=record.temperature,
        stream=record.stream,
        client_id=record.client_id,
        policy_version=record.policy_version,
    )


__all__ = ["Recorder"]

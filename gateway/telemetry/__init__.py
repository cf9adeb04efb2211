"""Observability: traces, metrics, scrubbed JSON logs and the audit trail.

Nothing is configured at import; the app calls ``setup_tracing``, ``configure_logging`` and
builds ``Metrics`` / ``AuditLog`` when it starts.
"""

from gateway.telemetry.audit import (
    AuditKeyError,
    AuditKind,
    AuditLog,
    VerifyResult,
    content_hmac,
    load_or_create_key,
    verify,
)
from gateway.telemetry.logging import ACCESS_LOGGER, add_trace_ids, configure_logging, get_logger, log_access
from gateway.telemetry.metrics import OTHER, LabelFold, Metrics, MetricsServer, bearer_matches
from gateway.telemetry.scrub import Scrubber, is_sensitive_key, redact
from gateway.telemetry.spans import (
    DECISION_EVENT,
    EXCLUDED_PATHS,
    SPAN_ADMISSION,
    SPAN_AUTH,
    SPAN_INPUT_GUARD,
    SPAN_STREAM,
    Operation,
    Telemetry,
    add_decision_event,
    current_ids,
    current_server_span,
    current_trace_id,
    engine_span,
    inject_traceparent,
    phase,
    request_attributes,
    response_attributes,
    set_error,
    start_span,
)
from gateway.telemetry.tracing import TracingConfigError, check_tracing_environment, setup_tracing

__all__ = [
    "ACCESS_LOGGER",
    "DECISION_EVENT",
    "EXCLUDED_PATHS",
    "OTHER",
    "SPAN_ADMISSION",
    "SPAN_AUTH",
    "SPAN_INPUT_GUARD",
    "SPAN_STREAM",
    "AuditKeyError",
    "AuditKind",
    "AuditLog",
    "LabelFold",
    "Metrics",
    "MetricsServer",
    "Operation",
    "Scrubber",
    "Telemetry",
    "TracingConfigError",
    "VerifyResult",
    "add_decision_event",
    "add_trace_ids",
    "bearer_matches",
    "check_tracing_environment",
    "configure_logging",
    "content_hmac",
    "current_ids",
    "current_server_span",
    "current_trace_id",
    "engine_span",
    "get_logger",
    "inject_traceparent",
    "is_sensitive_key",
    "load_or_create_key",
    "log_access",
    "phase",
    "redact",
    "request_attributes",
    "response_attributes",
    "set_error",
    "setup_tracing",
    "start_span",
    "verify",
]

"""The audit trail's say over traffic: with ``on_failure: block`` in the policy in force, no request is
admitted while the audit sink fails (503 ``audit_unavailable`` with ``Retry-After``).

The policy is read per call, so a reload that switches between ``continue`` and ``block`` applies to
the next request. Recovery needs no restart: ``AuditLog.writable`` probes the file about once a second.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway.errors import ServiceUnavailable

if TYPE_CHECKING:
    from gateway.policy.store import PolicyStore
    from gateway.telemetry.audit import AuditLog

BLOCKED_REASON = "audit sink failing and the policy blocks traffic until it recovers"


class AuditGate:
    """Answers whether traffic may flow given the audit sink's health and ``audit.on_failure``."""

    __slots__ = ("_audit", "_policy")

    def __init__(self, audit: AuditLog, policy: PolicyStore) -> None:
        self._audit = audit
        self._policy = policy

    def _blocking(self) -> bool:
        return self._policy.current.bundle.audit.on_failure == "block"

    def check(self) -> None:
        """Raise 503 ``audit_unavailable`` while the sink fails under ``on_failure: block``."""
        if not self._blocking() or self._audit.writable():
            return
        retry = max(1, math.ceil(self._audit.probe_interval_s))
        raise ServiceUnavailable(
            "The audit trail cannot be written and the policy refuses traffic until it can. Retry later.",
            code="audit_unavailable",
            headers={"retry-after": str(retry)},
        )

    def problem(self) -> str | None:
        """The ``/readyz`` reason that makes the replica not ready, or None."""
        if self._audit.writable() or not self._blocking():
            return None
        return BLOCKED_REASON

    def status(self) -> dict[str, object]:
        """The ``audit`` object of ``/readyz``; ``degraded`` when failing under ``continue``."""
        healthy = self._audit.writable()
        return {
            "healthy": healthy,
            "failures": self._audit.failures,
            "on_failure": self._policy.current.bundle.audit.on_failure,
            "degraded": not healthy and not self._blocking(),
        }


__all__ = ["BLOCKED_REASON", "AuditGate"]

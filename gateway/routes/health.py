"""GET /healthz (the process is alive) and GET /readyz (every engine answers and the policy is loaded)."""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

from gateway.relay.upstreams import Upstream
from gateway.state import GatewayState


def shown_url(url: str) -> str:
    """``url`` without its userinfo (``http://user:password@host`` → ``http://host``): /readyz is public."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@get("/healthz", status_code=200)
async def healthz() -> ASGIResponse:
    return ASGIResponse(body=b'{"status":"ok"}', media_type="application/json")


@get("/readyz", status_code=200)
async def readyz(gateway: NamedDependency[GatewayState]) -> ASGIResponse:
    checked = await asyncio.gather(*(_upstream_state(u) for u in gateway.upstreams.upstreams))
    engines = [entry for entry, _ in checked]
    reasons = [reason for _, reason in checked if reason is not None]
    for check in gateway.extra_ready_checks:
        problem = check()
        if problem:
            reasons.append(problem)
    limiter = gateway.limiter.status()
    audit = gateway.audit_gate.status()
    degraded = limiter.degraded or bool(audit["degraded"])
    body = {
        "status": "not_ready" if reasons else ("degraded" if degraded else "ready"),
        "reasons": reasons,
        "engine": engines[0],  # the first upstream, as before there were several
        "upstreams": engines,
        "policy": gateway.policy.status(),
        "audit": audit,
        "guards": {g.rule.id: g.breaker.state for g in gateway.guards.guards()},
        "ratelimit": {
            "storage": limiter.storage,
            "degraded": limiter.degraded,
            "fallbacks": limiter.fallbacks,
            "undone": limiter.undone,
            "undo_failures": limiter.undo_failures,
        },
    }
    return ASGIResponse(
        body=msgspec.json.encode(body), media_type="application/json", status_code=503 if reasons else 200
    )


async def _upstream_state(upstream: Upstream) -> tuple[dict[str, object], str | None]:
    """What /readyz shows of one engine, and why it is not ready (None when it answers)."""
    url = shown_url(upstream.url)
    entry: dict[str, object] = {"url": url, "models": sorted(upstream.models)}
    supervisor = upstream.supervisor
    if supervisor is not None:
        entry.update(dataclasses.asdict(supervisor.status()))
        if not supervisor.up:
            entry["up"] = False
            return entry, f"engine down: {supervisor.reason or 'starting'} ({url})"
    problem = await upstream.client.health()
    entry["up"] = problem is None
    return entry, None if problem is None else f"{problem} ({url})"


__all__ = ["healthz", "readyz", "shown_url"]

"""GET /healthz (the process is alive) and GET /readyz (the engine answers and the policy is loaded)."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.response.base import ASGIResponse

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
    reasons: list[str] = []
    engine: dict[str, object] = {"url": shown_url(gateway.engine.config.base_url)}
    supervisor = gateway.supervisor
    if supervisor is not None:
        engine.update(dataclasses.asdict(supervisor.status()))
        if not supervisor.up:
            reasons.append(f"engine down: {supervisor.reason or 'starting'}")
    if not reasons:
        problem = await gateway.engine.health()
        engine["up"] = problem is None
        if problem is not None:
            reasons.append(problem)
    for check in gateway.extra_ready_checks:
        problem = check()
        if problem:
            reasons.append(problem)
    limiter = gateway.limiter.status()
    degraded = limiter.degraded
    body = {
        "status": "not_ready" if reasons else ("degraded" if degraded else "ready"),
        "reasons": reasons,
        "engine": engine,
        "policy": gateway.policy.status(),
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


__all__ = ["healthz", "readyz", "shown_url"]

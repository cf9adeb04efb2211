"""Run the real gateway app under uvicorn on a free loopback port, in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.app import AppParts, create_app
from gateway.serve import server_config
from gateway.settings import Settings, load_settings
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES = REPO / "policies" / "default"


def gateway_settings(tmp: Path, upstream: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "upstream": upstream,
        "auth": "none",
        "policies": DEFAULT_POLICIES,
        "data_dir": tmp,
        "first_token_timeout": 10.0,
        "idle_timeout": 5.0,
        # Engines' model lists are read at start and on an unknown model; no periodic read lands between a
        # test's request and its look at the fake's last request.
        "models_refresh": 3600.0,
    }
    values.update(overrides)
    return load_settings(**values)


class RunningGateway:
    def __init__(self, settings: Settings, server: uvicorn.Server, app: Any) -> None:
        self.settings = settings
        self.server = server
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{self.settings.server.host}:{self.settings.server.port}"

    @property
    def api(self) -> str:
        return self.url + "/v1"

    @property
    def state(self) -> Any:
        """The app's GatewayState (tests only: inspect policy, limiter, recorder)."""
        return self.app.dependencies["gateway"].dependency()


@contextmanager
def run_gateway(settings: Settings, parts: AppParts | None = None) -> Iterator[RunningGateway]:
    app = create_app(settings, parts)
    server = uvicorn.Server(
        server_config(app, settings)
    )  # the server `gateway serve` runs, edge bounds included
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True, name="gateway")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield RunningGateway(settings, server, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_for(predicate: Any, within: float = 2.0, interval: float = 0.01) -> float:
    """Poll ``predicate`` until true; return the seconds it took, or raise AssertionError."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(interval)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)


__all__ = [
    "DEFAULT_POLICIES",
    "RunningGateway",
    "free_port",
    "gateway_settings",
    "get",
    "run_gateway",
    "wait_for",
]

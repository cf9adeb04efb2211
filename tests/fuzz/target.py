"""The gateway under fuzz, as the tests see it: its address, a client token, its logs, a liveness check."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.fakes.engine import FakeEngine
from tests.support.gateway import RunningGateway
from tests.support.logcapture import Logs

MODEL = "qwen3-8b"


@dataclass
class Target:
    gateway: RunningGateway
    engine: FakeEngine
    token: str
    logs: Logs

    @property
    def port(self) -> int:
        return self.gateway.settings.server.port

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def assert_alive(self) -> None:
        """A normal request still succeeds: the process survived whatever came before."""
        response = httpx.post(
            self.gateway.api + "/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "still there?"}]},
            headers=self.auth(),
            timeout=20,
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]


__all__ = ["MODEL", "Target"]

"""A parallel flood of wrong secrets over real sockets: the failure limit holds before any hashing."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from litestar import Litestar

from gateway.auth import clientstore
from gateway.auth.clientstore import ClientStore
from gateway.auth.config import AuthConfig
from gateway.auth.issuer import BuiltinIssuer
from gateway.routes.oauth import oauth_router
from tests.support.ports import free_port

FAILURES = 10


class Served:
    def __init__(self, url: str, secrets: dict[str, str], hashed: collections.Counter[str]) -> None:
        self.url = url
        self.secrets = secrets
        self.hashed = hashed


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setattr(
        clientstore, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    auth = AuthConfig(
        builtin_issuer="http://127.0.0.1:8080",
        key_file=tmp_path / "keys.json",
        secrets_file=tmp_path / "secrets.yaml",
        token_attempts_per_address="10000/minute",
        token_failures_per_client=f"{FAILURES}/minute",
    )
    store = ClientStore(auth.secrets_file)
    secrets = {cid: store.add(cid, ["chat"]) for cid in ("billing", "reporting")}
    issuer = BuiltinIssuer(auth)
    hashed: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    verify = issuer.clients.verify

    def counted(client_id: str, secret: str) -> object:
        with lock:
            hashed[client_id] += 1
        time.sleep(0.05)  # a slow hash, so that the flood's requests overlap
        return verify(client_id, secret)

    issuer.clients.verify = counted  # type: ignore[method-assign,assignment]
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Litestar([oauth_router(issuer)]), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", secrets, hashed)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def test_parallel_wrong_secrets_are_hashed_at_most_the_failure_limit(served: Served) -> None:
    form = {"grant_type": "client_credentials"}
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=60) as http:
        flood = [http.post("/oauth/token", data=form, auth=("billing", f"guess-{i}")) for i in range(200)]
        legit = http.post("/oauth/token", data=form, auth=("reporting", served.secrets["reporting"]))
        *answers, legit_answer = await asyncio.gather(*flood, legit)
    statuses = collections.Counter(a.status_code for a in answers)
    assert served.hashed["billing"] <= FAILURES
    assert statuses[401] == served.hashed["billing"]
    assert statuses[429] == 200 - statuses[401]
    assert all(a.json()["error"] == "slow_down" for a in answers if a.status_code == 429)
    assert legit_answer.status_code == 200
    assert served.hashed["reporting"] == 1

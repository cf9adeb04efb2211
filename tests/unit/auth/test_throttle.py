"""Attempt limits of the token endpoint: the throttle alone, then through the route."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import time_machine
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.auth import clientstore
from gateway.auth.clientstore import ClientStore, StoredClient
from gateway.auth.config import AuthConfig
from gateway.auth.issuer import BuiltinIssuer
from gateway.auth.throttle import Attempt, Throttled, TokenThrottle, address_key, presented_client_id
from gateway.routes.oauth import oauth_router


def basic(user: str, secret: str = "s") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("testclient", "unknown"),
        (None, "unknown"),
    ],
)
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key


@pytest.mark.parametrize(
    ("form", "headers", "expected"),
    [
        ({}, basic("billing"), "billing"),
        ({}, basic("a%3Ab+c"), "a:b c"),  # RFC 6749 §2.3.1 form-encoding inside Basic
        ({"client_id": ["billing"]}, {}, "billing"),
        ({"client_id": ["form"]}, basic("header"), "header"),
        ({"client_id": ["a", "b"]}, {}, None),
        ({}, {"authorization": "Basic !!!not-base64"}, None),
        ({}, {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, None),
        ({}, {"Authorization": "Bearer x"}, None),
        ({}, {}, None),
    ],
)
def test_presented_client_id(
    form: dict[str, list[str]], headers: dict[str, str], expected: str | None
) -> None:
    assert presented_client_id(form, headers) == expected


async def test_address_window_counts_every_attempt_and_frees_after_the_window() -> None:
    throttle = TokenThrottle(per_address="3/minute", per_client_failures="10/minute")
    with time_machine.travel(time.time(), tick=False) as clock:
        assert [await throttle.admit_address("203.0.113.7") for _ in range(3)] == [None] * 3
        refused = await throttle.admit_address("203.0.113.7")
        assert refused is not None
        assert refused.scope == "address"
        assert 59 <= refused.retry_after_s <= 60
        assert await throttle.admit_address("203.0.113.8") is None  # another address has its own window
        clock.shift(30)
        retry = await throttle.admit_address("203.0.113.7")
        assert retry is not None
        assert 29 <= retry.retry_after_s <= 31
        clock.shift(31)
        assert await throttle.admit_address("203.0.113.7") is None


def test_client_window_counts_attempts_until_they_succeed() -> None:
    throttle = TokenThrottle(per_address="100/minute", per_client_failures="2/minute")
    for _ in range(5):  # a right secret gives its slot back
        attempt = throttle.reserve_client("billing")
        assert isinstance(attempt, Attempt)
        throttle.succeeded(attempt)
    first, second = throttle.reserve_client("billing"), throttle.reserve_client("billing")
    assert isinstance(first, Attempt)
    assert isinstance(second, Attempt)
    # Two attempts in flight hold both slots: a third is refused before anything is hashed.
    refused = throttle.reserve_client("billing")
    assert isinstance(refused, Throttled)
    assert refused.scope == "client"
    assert 59 <= refused.retry_after_s <= 60
    throttle.succeeded(first)
    assert isinstance(throttle.reserve_client("billing"), Attempt)
    assert isinstance(throttle.reserve_client("reporting"), Attempt)
    assert isinstance(throttle.reserve_client(None), Attempt)  # no id: only the address limit applies


async def test_failure_slots_free_when_the_window_moves_on() -> None:
    throttle = TokenThrottle(per_address="100/minute", per_client_failures="1/minute")
    with time_machine.travel(time.time(), tick=False) as clock:
        assert isinstance(throttle.reserve_client("billing"), Attempt)
        assert isinstance(throttle.reserve_client("billing"), Throttled)
        clock.shift(61)
        assert isinstance(throttle.reserve_client("billing"), Attempt)


def test_config_rejects_unparsable_or_zero_rates(tmp_path: Path) -> None:
    files = {
        "builtin_issuer": "http://127.0.0.1:8080",
        "key_file": tmp_path / "k.json",
        "secrets_file": tmp_path / "s.yaml",
    }
    config = AuthConfig(**files, token_attempts_per_address="lots", token_failures_per_client="0/minute")
    problems = config.problems()
    assert any("--token-attempts-per-address" in p for p in problems)
    assert any("--token-failures-per-client" in p for p in problems)
    assert AuthConfig(**files).problems() == []


# --- through the route --------------------------------------------------------------------------------------


@dataclass
class Verifications:
    """Wraps ClientStore.verify: how many ran, in which threads, and how many at once."""

    calls: int = 0
    running: int = 0
    peak: int = 0
    threads: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(
        self, verify: Callable[[str, str], StoredClient | None]
    ) -> Callable[[str, str], StoredClient | None]:
        def counted(client_id: str, secret: str) -> StoredClient | None:
            with self.lock:
                self.calls += 1
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.threads.add(threading.get_ident())
            try:
                time.sleep(0.1)  # long enough for concurrent requests to overlap
                return verify(client_id, secret)
            finally:
                with self.lock:
                    self.running -= 1

        return counted


@dataclass
class Route:
    client: AsyncTestClient[Litestar]
    issuer: BuiltinIssuer
    secrets: dict[str, str]
    verifications: Verifications


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fast argon2 parameters: the tests count verifications, they do not measure them.
    monkeypatch.setattr(
        clientstore, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


async def make_route(tmp_path: Path, **config: object) -> AsyncIterator[Route]:
    auth = AuthConfig(
        builtin_issuer="http://127.0.0.1:8080",
        key_file=tmp_path / "keys.json",
        secrets_file=tmp_path / "secrets.yaml",
        **config,
    )
    store = ClientStore(auth.secrets_file)
    secrets = {cid: store.add(cid, ["chat"]) for cid in ("billing", "reporting")}
    issuer = BuiltinIssuer(auth)
    verifications = Verifications()
    issuer.clients.verify = verifications.wrap(issuer.clients.verify)  # type: ignore[method-assign,assignment]
    async with AsyncTestClient(Litestar([oauth_router(issuer)])) as client:
        yield Route(client, issuer, secrets, verifications)


@pytest.fixture
async def route(tmp_path: Path, cheap_hashes: None) -> AsyncIterator[Route]:
    async for value in make_route(tmp_path, token_failures_per_client="2/minute", max_concurrent_hashes=2):
        yield value


async def token(route: Route, client_id: str, secret: str) -> tuple[int, dict[str, object], dict[str, str]]:
    response = await route.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return response.status_code, response.json(), dict(response.headers)


async def test_failures_lock_the_client_id_without_hashing(route: Route) -> None:
    assert (await token(route, "billing", "wrong"))[0] == 401
    assert (await token(route, "billing", "wrong"))[0] == 401
    assert route.verifications.calls == 2
    status, body, headers = await token(route, "billing", route.secrets["billing"])
    assert status == 429
    assert body == {"error": "slow_down", "error_description": "Too many token requests; retry later."}
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["cache-control"] == "no-store"
    # The same id sent as client_secret_post is the same bucket.
    posted = await route.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "billing",
            "client_secret": route.secrets["billing"],
        },
    )
    assert posted.status_code == 429
    assert route.verifications.calls == 2, "a throttled attempt must not cost a hash"
    assert (await token(route, "reporting", route.secrets["reporting"]))[0] == 200


async def test_unknown_client_ids_are_throttled_too(route: Route) -> None:
    for _ in range(2):
        assert (await token(route, "nobody", "guess"))[0] == 401
    assert (await token(route, "nobody", "guess"))[0] == 429
    assert route.verifications.calls == 2


async def test_successes_do_not_count_against_the_client(route: Route) -> None:
    for _ in range(4):
        assert (await token(route, "billing", route.secrets["billing"]))[0] == 200


@pytest.mark.parametrize("slots", [1, 2])
async def test_verifications_run_in_worker_threads_a_few_at_a_time(
    tmp_path: Path, cheap_hashes: None, slots: int
) -> None:
    # Straight to the issuer: the test client serialises requests, the server would not.
    async for route in make_route(tmp_path, max_concurrent_hashes=slots):
        form = {"grant_type": ["client_credentials"]}
        headers = basic("billing", route.secrets["billing"])
        results = await asyncio.gather(*(route.issuer.token_response(form, headers) for _ in range(5)))
        assert [status for status, _, _ in results] == [200] * 5
        assert route.verifications.calls == 5
        assert route.verifications.peak == slots
        assert threading.get_ident() not in route.verifications.threads

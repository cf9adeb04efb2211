"""Rate limits through running gateways.

Three ``python -m gateway serve`` processes share one Redis (db 15) and one policy bundle whose limits each
test rewrites (the replicas hot-reload it). With ``--auth none`` every request is the client ``anonymous``,
so all replicas count against the same keys. Outage tests run one gateway in a thread, in front of a Redis
that is closed or black-holed. No test may see a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import openai
import pytest
import redis

from tests.fakes.engine import FakeEngine
from tests.fakes.script import Script
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway, wait_for
from tests.support.ports import free_port
from tests.support.redis import REDIS_URL
from tests.support.replicas import (
    ANONYMOUS_BASE,
    Bundle,
    GatewayProcess,
    ProxyThread,
    apply_limits,
    start_replicas,
    stop_all,
)

pytestmark = pytest.mark.redis

MODEL = "qwen3-8b"
LEASES = ANONYMOUS_BASE + "c"
TOKENS_HOUR = ANONYMOUS_BASE + "t:3600"
GENEROUS = {"requests": "100000/hour", "tokens": "100000000/hour", "concurrency": 64}
BANNED = "forbidden-demo"  # in policies/default/lists/violence.txt, action block

SCRIPTS = {
    "short": Script.of("All good here."),
    # headers at once, then a long prefill: the admission is held while the client keeps the stream open
    "hold": Script.of("late answer", first_token_delay=30.0),
    "fail": Script.http_error(500),
    "midfail": Script.lorem(8, error_after=3),
    "slow": Script.lorem(300, rate=100),
    "banned": Script.of(f" this answer mentions {BANNED} and then goes on for a while longer"),
    "five": Script.lorem(40, seed=3, stalls=((5, 30.0),)),  # five tokens, then a stall
}


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: Any  # JSON of an error or a non-streamed answer; SSE text of a stream; None when held


def body(script: str, *, stream: bool = False, max_tokens: int = 16) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"[[script:{script}]] go"}],
        "stream": stream,
        "max_tokens": max_tokens,
    }


def error_of(reply: Reply) -> dict[str, Any]:
    error: dict[str, Any] = reply.body["error"]
    return error


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rdb() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def clean_keys(rdb: redis.Redis) -> Iterator[None]:
    def purge() -> None:
        keys = list(rdb.scan_iter(match=ANONYMOUS_BASE + "*", count=1000))
        if keys:
            rdb.delete(*keys)

    purge()
    yield
    purge()


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeEngine]:
    with FakeEngine(models=(MODEL,), scripts=SCRIPTS) as fake:
        yield fake


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    shared = Bundle(tmp_path_factory.mktemp("rl-bundle") / "policies")
    shared.set_limits(GENEROUS)
    return shared


@pytest.fixture(scope="module")
def replicas(
    engine: FakeEngine, bundle: Bundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[GatewayProcess]]:
    procs = start_replicas(3, bundle.root, engine.url, REDIS_URL, tmp_path_factory.mktemp("rl-replicas"))
    yield procs
    stop_all(procs)


# --- helpers ----------------------------------------------------------------------------------------


async def post(client: httpx.AsyncClient, replica: GatewayProcess, payload: dict[str, Any]) -> Reply:
    r = await client.post(replica.api + "/chat/completions", json=payload)
    streamed = payload["stream"] and r.status_code == 200
    return Reply(r.status_code, r.headers, r.text if streamed else r.json())


async def held_burst(
    replicas: Sequence[GatewayProcess],
    count: int,
    max_tokens: int,
    while_held: Callable[[], Awaitable[None]] | None = None,
) -> list[Reply]:
    """``count`` concurrent streams of the "hold" script over the replicas, round robin. Admitted streams
    stay open (in prefill) until every request has its answer, then all close: a client disconnect before
    the first token. ``while_held`` runs while they are open."""
    decided: list[Reply] = []
    everyone = asyncio.Event()  # every request has its answer
    release = asyncio.Event()  # the admitted streams may close

    def note(reply: Reply) -> None:
        decided.append(reply)
        if len(decided) == count:
            everyone.set()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        replica = replicas[i % len(replicas)]
        payload = body("hold", stream=True, max_tokens=max_tokens)
        noted = False
        try:
            async with client.stream("POST", replica.api + "/chat/completions", json=payload) as r:
                error = None
                if r.status_code != 200:
                    await r.aread()
                    error = r.json()
                note(Reply(r.status_code, r.headers, error))
                noted = True
                if r.status_code == 200:
                    await release.wait()
        except httpx.HTTPError as exc:  # recorded, so the others are still released
            if not noted:
                note(Reply(-1, httpx.Headers(), repr(exc)))

    limits = httpx.Limits(max_connections=4 * count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(count)]
        try:
            await asyncio.wait_for(everyone.wait(), 30)
            if while_held is not None:
                await while_held()
        finally:
            release.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return decided


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


def window_count(rdb: redis.Redis, key: str) -> int:
    value = rdb.hget(key, "n")
    return int(value) if value is not None else 0


def assert_refusals(replies: Sequence[Reply], limit: str) -> None:
    for reply in (r for r in replies if r.status == 429):
        error = error_of(reply)
        assert error["type"] == "rate_limit_error"
        assert error["param"] == limit
        assert 0 <= retry_after(reply.headers) <= 3600


class HeaderList(Protocol):
    """httpx.Headers, or the openai SDK's copy of it."""

    def get_list(self, key: str, split_commas: bool = False) -> list[str]: ...


def retry_after(headers: HeaderList) -> int:
    values = headers.get_list("retry-after")
    assert len(values) == 1, values  # one header, whoever set it
    return int(values[0])


# --- exactness across replicas -------------------------------------------------------------------------


async def test_request_limit_is_exact_across_three_replicas(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess]
) -> None:
    n = 15
    apply_limits(bundle, replicas, {"requests": f"{n}/hour"})
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=4 * n)) as client:
        replies = await asyncio.gather(*(post(client, replicas[i % 3], body("short")) for i in range(2 * n)))
    assert Counter(r.status for r in replies) == {200: n, 429: n}
    assert_refusals(replies, "requests")
    # every admission saw the count its predecessor left, whichever replica served either
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in replies if r.status == 200)
    assert remaining == list(range(n))


async def test_token_limit_is_exact_across_three_replicas(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess], rdb: redis.Redis
) -> None:
    n, max_tokens, slack = 8, 1000, 400
    limit = n * max_tokens + slack
    apply_limits(bundle, replicas, {"tokens": f"{limit}/hour"})
    replies = await held_burst(replicas, 2 * n, max_tokens)
    assert Counter(r.status for r in replies) == {200: n, 429: n}
    assert_refusals(replies, "tokens")

    # each admission reserved prompt estimate + max_tokens, one after the other across replicas
    remaining = sorted(int(r.headers["x-ratelimit-remaining-tokens"]) for r in replies if r.status == 200)
    reservation = limit - remaining[-1]
    assert 0 <= limit - n * reservation < reservation, "precondition: exactly n reservations fit"
    assert remaining == [limit - k * reservation for k in range(n, 0, -1)]
    # closed before the first token: each is charged its prompt only, the max_tokens part is refunded
    prompt = reservation - max_tokens
    await eventually(lambda: window_count(rdb, TOKENS_HOUR) == n * prompt)


async def test_concurrency_limit_is_exact_across_three_replicas(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess], rdb: redis.Redis
) -> None:
    n = 6
    apply_limits(bundle, replicas, {"concurrency": n})
    leases_while_held: list[int] = []

    async def count_leases() -> None:
        leases_while_held.append(int(rdb.zcard(LEASES)))

    replies = await held_burst(replicas, 2 * n, 16, count_leases)
    assert Counter(r.status for r in replies) == {200: n, 429: n}
    assert_refusals(replies, "concurrency")
    assert leases_while_held == [n]
    await eventually(lambda: rdb.exists(LEASES) == 0)


# --- slot release and token accounting ---------------------------------------------------------------


async def _mixed_one(client: httpx.AsyncClient, replica: GatewayProcess, kind: str) -> tuple[str, int, bool]:
    """One request of ``kind``; returns (kind, status, whether it ended the way that kind must)."""
    if kind == "stream":
        r = await post(client, replica, body("short", stream=True))
        return kind, r.status, r.status == 200 and '"finish_reason":"stop"' in r.body
    if kind == "json":
        r = await post(client, replica, body("short"))
        return kind, r.status, r.status == 200 and r.body["choices"][0]["finish_reason"] == "stop"
    if kind == "http_error":
        r = await post(client, replica, body("fail"))
        return kind, r.status, r.status == 502
    if kind == "mid_error":
        r = await post(client, replica, body("midfail", stream=True))
        return kind, r.status, r.status == 200 and '"error"' in r.body and "[DONE]" not in r.body
    if kind == "guardrail":
        r = await post(client, replica, body("banned", stream=True, max_tokens=64))
        return kind, r.status, r.status == 200 and '"finish_reason":"content_filter"' in r.body
    # disconnect: read a few events of a long stream, then go away
    payload = body("slow", stream=True, max_tokens=300)
    async with client.stream("POST", replica.api + "/chat/completions", json=payload) as resp:
        events = 0
        async for line in resp.aiter_lines():
            events += line.startswith("data: ")
            if events >= 3:
                break
    return kind, resp.status_code, resp.status_code == 200 and events == 3


async def test_every_slot_is_released_after_mixed_endings(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess], rdb: redis.Redis
) -> None:
    kinds = ("stream", "json", "http_error", "mid_error", "guardrail", "disconnect")
    total = 1002  # the issue asks for 1,000 mixed requests; a multiple of the six kinds
    apply_limits(bundle, replicas, GENEROUS)
    gate = asyncio.Semaphore(16)  # well under the concurrency limit: no request is refused

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, int, bool]:
        async with gate:
            return await _mixed_one(client, replicas[i % 3], kinds[i % len(kinds)])

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        results = await asyncio.gather(*(one(client, i) for i in range(total)))
    wrong = [(kind, status) for kind, status, ok in results if not ok]
    assert not wrong, wrong
    assert Counter(kind for kind, _, _ in results) == {k: total // len(kinds) for k in kinds}

    await eventually(lambda: rdb.exists(LEASES) == 0)
    await eventually(lambda: engine.running == 0)
    assert not engine.errors
    # and every key the admissions left behind expires
    keys = list(rdb.scan_iter(match=ANONYMOUS_BASE + "*"))
    assert keys and all(int(rdb.pttl(k)) > 0 for k in keys)


async def test_tokens_charged_are_usage_and_what_a_disconnected_stream_generated(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess], rdb: redis.Redis
) -> None:
    limit, max_tokens = 1_000_000, 300
    apply_limits(bundle, replicas, {"tokens": f"{limit}/hour"})
    replica = replicas[0]
    async with httpx.AsyncClient(timeout=30) as client:
        # a finished request is charged the engine's usage, not its reservation
        done = await post(client, replica, body("short", max_tokens=max_tokens))
        assert done.status == 200
        reserved = limit - int(done.headers["x-ratelimit-remaining-tokens"])
        used = done.body["usage"]["total_tokens"]
        assert 0 < used < reserved
        assert window_count(rdb, TOKENS_HOUR) == used

        # a stream the client leaves after five generated tokens is charged its prompt plus those five
        payload = body("five", stream=True, max_tokens=max_tokens)
        async with client.stream("POST", replica.api + "/chat/completions", json=payload) as resp:
            assert resp.status_code == 200
            reserved = (limit - used) - int(resp.headers["x-ratelimit-remaining-tokens"])
            await eventually(lambda: engine.last_request.chunks_sent >= 5)
            await asyncio.sleep(0.3)  # the gateway reads them (the engine now stalls)
    prompt = reserved - max_tokens
    await eventually(lambda: window_count(rdb, TOKENS_HOUR) != used + reserved)
    assert window_count(rdb, TOKENS_HOUR) == used + prompt + 5


# --- headers and the openai SDK ------------------------------------------------------------------------


def test_headers_on_every_answer_and_429_through_the_sdk(
    engine: FakeEngine, bundle: Bundle, replicas: list[GatewayProcess]
) -> None:
    apply_limits(bundle, replicas, {"requests": "3/hour", "tokens": "4000/hour"})
    messages: Any = [{"role": "user", "content": "[[script:short]] go"}]
    with openai.OpenAI(base_url=replicas[1].api, api_key="unused", max_retries=0, timeout=20) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=16)
        raw.parse()
        h = raw.headers
        assert (h["ratelimit-limit"], h["ratelimit-remaining"], h["ratelimit-policy"]) == (
            "3",
            "2",
            "3;w=3600",
        )
        assert 0 < int(h["ratelimit-reset"]) <= 3600
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert h["x-ratelimit-reset-requests"].endswith("s")
        assert h["x-ratelimit-limit-tokens"] == "4000"
        assert 0 < int(h["x-ratelimit-remaining-tokens"]) < 4000

        # a reservation larger than the token window is refused, and charges nothing
        with pytest.raises(openai.RateLimitError) as tokens_hit:
            sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=4096)
        assert tokens_hit.value.param == "tokens"
        assert tokens_hit.value.type == "rate_limit_error"
        assert retry_after(tokens_hit.value.response.headers) >= 0

        streamed = sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=16, stream=True
        )
        # the refused request above was not charged: this is the second one counted
        assert streamed.headers["x-ratelimit-remaining-requests"] == "1"
        assert streamed.headers["ratelimit-remaining"] == "1"
        assert "x-ratelimit-remaining-tokens" in streamed.headers
        chunks = list(streamed.parse())
        assert chunks and chunks[-1].choices[0].finish_reason == "stop"

        sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)
        with pytest.raises(openai.RateLimitError) as requests_hit:
            sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)
    error = requests_hit.value
    assert error.status_code == 429
    assert error.param == "requests"
    assert isinstance(error.body, dict) and "request" in str(error.body.get("message", "")).lower()
    assert 0 < retry_after(error.response.headers) <= 3600
    assert error.response.headers["ratelimit-remaining"] == "0"


# --- Redis outage --------------------------------------------------------------------------------------


def _outage_gateway(
    tmp: Path, engine: FakeEngine, redis_url: str, mode: str, tier: dict[str, Any], **options: Any
) -> Any:
    bundle = Bundle(tmp / "policies")
    bundle.set_limits(tier, mode)
    # 500 ms, not the default 50: the gateway, the proxy and the test share one process on a busy box,
    # and a spurious timeout would change which limiter answers
    settings = gateway_settings(
        tmp / "data", engine.url, policies=bundle.root, redis_url=redis_url, redis_timeout_ms=500, **options
    )
    return run_gateway(settings)


def _chat(gateway: RunningGateway) -> httpx.Response:
    return httpx.post(gateway.api + "/chat/completions", json=body("short"), timeout=10)


@pytest.mark.parametrize("fault", ["closed_port", "blackhole"])
def test_fail_closed_answers_503_and_stays_alive(engine: FakeEngine, tmp_path: Path, fault: str) -> None:
    proxy = ProxyThread() if fault == "blackhole" else None
    url = proxy.url if proxy is not None else f"redis://127.0.0.1:{free_port()}/15"
    try:
        with _outage_gateway(tmp_path, engine, url, "fail_closed", {"requests": "100/hour"}) as gateway:
            if proxy is not None:
                assert _chat(gateway).status_code == 200  # healthy first, then Redis hangs
                proxy.blackhole = True
            for _ in range(4):
                started = time.monotonic()
                r = _chat(gateway)
                assert time.monotonic() - started < 2.0, "a hung Redis must not stall the request"
                assert r.status_code == 503
                error = r.json()["error"]
                assert error["code"] == "ratelimit_unavailable"
                assert error["type"] == "service_unavailable" and error["message"]
            assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200
            assert httpx.get(gateway.url + "/readyz", timeout=5).json()["ratelimit"]["degraded"] is True
    finally:
        if proxy is not None:
            proxy.close()


def test_fail_open_falls_back_to_local_limits_and_reports_it(engine: FakeEngine, tmp_path: Path) -> None:
    proxy = ProxyThread()
    try:
        with _outage_gateway(tmp_path, engine, proxy.url, "fail_open", {"requests": "3/hour"}) as gateway:
            assert _chat(gateway).status_code == 200  # counted in Redis
            proxy.blackhole = True
            # the local fallback starts its own count: three more pass, the fourth is refused
            statuses = [_chat(gateway).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            ready = httpx.get(gateway.url + "/readyz", timeout=5).json()
            assert ready["status"] == "degraded"
            limiter = ready["ratelimit"]
            assert (limiter["storage"], limiter["degraded"], limiter["fallbacks"]) == ("redis", True, 4)
            assert httpx.get(gateway.url + "/healthz", timeout=5).status_code == 200

            def fallback_metric() -> bool:
                text = httpx.get(gateway.url + "/metrics", timeout=5).text
                return "menshen_redis_fallback 1.0" in text

            wait_for(fallback_metric, within=8.0, interval=0.2)

            # Redis answers again: once the probe interval has passed, the shared count (1) applies again
            proxy.blackhole = False
            seen: list[int] = []

            def admitted() -> bool:
                seen.append(_chat(gateway).status_code)
                return seen[-1] == 200

            wait_for(admitted, within=5.0, interval=0.1)
            assert set(seen) <= {200, 429}  # local refusals until Redis is tried again
            ready = httpx.get(gateway.url + "/readyz", timeout=5).json()
            assert ready["status"] == "ready" and ready["ratelimit"]["degraded"] is False
    finally:
        proxy.close()


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_an_admission_answered_too_late_is_undone(
    engine: FakeEngine, tmp_path: Path, rdb: redis.Redis, mode: str
) -> None:
    requests = ANONYMOUS_BASE + "r:3600"

    def keys() -> set[str]:
        """The client's keys but undo markers: request-only admissions leave theirs to expire."""
        return {k.decode() for k in rdb.scan_iter(match=ANONYMOUS_BASE + "*")} - undo_keys()

    def undo_keys() -> set[str]:
        return {k.decode() for k in rdb.scan_iter(match=ANONYMOUS_BASE + "u:*")}

    proxy = ProxyThread()
    try:
        # no allowance: while Redis answers other commands, a late reply is otherwise waited for
        with _outage_gateway(
            tmp_path, engine, proxy.url, mode, {"requests": "100/hour"}, redis_loop_lag_allowance_ms=0
        ) as gateway:
            assert _chat(gateway).status_code == 200  # counted in Redis
            wait_for(lambda: keys() == {requests}, within=5.0)
            settled_markers = undo_keys()
            # Redis runs the next admission, but its answer comes after the gateway's 500 ms timeout
            proxy.proxy.delay_next_reply(1.5)
            r = _chat(gateway)
            assert r.status_code == (503 if mode == "fail_closed" else 200)  # fail_open: local limits
            # undone in the background: the count is back at 1 and its marker is gone (a cancel that had
            # not found the admission's marker would have left a tombstone)
            wait_for(lambda: window_count(rdb, requests) == 1 and undo_keys() <= settled_markers, within=5.0)
            # and it stays that way once the late answer has arrived (and been dropped)
            time.sleep(1.2)
            assert keys() == {requests}
            assert undo_keys() <= settled_markers
            assert window_count(rdb, requests) == 1
            limiter = httpx.get(gateway.url + "/readyz", timeout=5).json()["ratelimit"]
            assert (limiter["undone"], limiter["undo_failures"]) == (1, 0)

            def undo_metric() -> bool:  # the gauges loop copies the limiter's totals every 5 s
                text = httpx.get(gateway.url + "/metrics", timeout=5).text
                return 'menshen_ratelimit_undo_total{result="undone"} 1.0' in text

            wait_for(undo_metric, within=8.0, interval=0.2)
    finally:
        proxy.close()

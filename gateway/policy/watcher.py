"""Hot reload: watch the bundle directory and reload once its files have settled; SIGHUP reloads too.

Editors save in bursts (swap file, backup, rename, chmod). Changes only mark the bundle dirty;
the reload runs once no change has arrived for ``debounce_ms``, in a worker thread so pattern
probes and guardrail compilation never block the event loop. A reload that still sees a partial
save fails validation or the settle check in `load_settled`, keeps the old snapshot, and the
next change triggers another attempt.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import watchfiles

from gateway.policy.store import PolicyStore

logger = logging.getLogger(__name__)


class PolicyFileFilter(watchfiles.DefaultFilter):
    """Ignore editor temporary files and the golden tests, which are not part of the policy."""

    ignore_entity_patterns = (
        *watchfiles.DefaultFilter.ignore_entity_patterns,
        r"\.sw[a-p]$",  # vim swap files
        r"^4913$",  # vim's probe file when checking it may write the directory
        r"^\.#",  # emacs lock files
        r"^#.*#$",  # emacs auto-save files
        r"\.(tmp|temp|bak|orig|rej|part)$",
        r"\.kate-swp$",
        r"___jb_(tmp|old)___$",  # JetBrains safe write
    )

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._tests = str(root / "tests")

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if path == self._tests or path.startswith(self._tests + "/"):
            return False
        return super().__call__(change, path)


def is_policy_change(root: Path, path: str) -> bool:
    """Whether a change at ``path`` may change the bundle (used by the watcher's filter)."""
    return PolicyFileFilter(root)(watchfiles.Change.modified, path)


async def watch(
    store: PolicyStore,
    *,
    debounce_ms: int = 300,
    stop_event: asyncio.Event | None = None,
    force_polling: bool | None = None,
) -> None:
    """Reload ``store`` whenever its directory settles after a change, until ``stop_event`` is set."""
    root = store.current.source_dir
    stop = stop_event or asyncio.Event()
    changed = asyncio.Event()

    async def collect() -> None:
        async for _changes in watchfiles.awatch(
            root,
            watch_filter=PolicyFileFilter(root),
            step=min(50, debounce_ms),
            stop_event=stop,
            force_polling=force_polling,
            rust_timeout=500,  # wake up regularly so stop_event is seen promptly
        ):
            changed.set()

    collector = asyncio.create_task(collect(), name="policy-watch")
    waiters: list[asyncio.Task[bool]] = []
    try:
        while not stop.is_set():
            waiters = [asyncio.create_task(changed.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait({*waiters, collector}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if collector.done():
                collector.result()  # surface a watcher failure instead of silently stopping reloads
                return
            if stop.is_set():
                return
            await _settle(changed, debounce_ms / 1000.0)
            ok = await asyncio.to_thread(store.reload)
            logger.debug("policy reload after change: ok=%s", ok)
    finally:
        stop.set()
        for task in (*waiters, collector):
            task.cancel()
        await asyncio.gather(*waiters, collector, return_exceptions=True)


async def _settle(changed: asyncio.Event, quiet: float) -> None:
    """Return once ``quiet`` seconds have passed without a new change."""
    changed.clear()
    while True:
        try:
            await asyncio.wait_for(changed.wait(), timeout=quiet)
        except TimeoutError:
            return
        changed.clear()


def install_sighup(loop: asyncio.AbstractEventLoop, store: PolicyStore) -> None:
    """Reload the policy on SIGHUP (Unix only), in a worker thread; bursts of signals coalesce."""
    pending: list[asyncio.Future[bool]] = []

    def on_sighup() -> None:
        if pending and not pending[0].done():
            return
        pending[:] = [loop.run_in_executor(None, store.reload)]
        logger.info("SIGHUP: reloading policy")

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


__all__ = ["PolicyFileFilter", "install_sighup", "is_policy_change", "watch"]

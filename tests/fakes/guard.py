"""A fake guard engine (Qwen3Guard-Gen's chat route) and a fake webhook guard service, on a real socket.

Trigger words in the judged text choose the answer: ``bomb`` → Unsafe/Violent, ``gossip`` → Controversial,
``slowly`` → an answer after ``slow_s``, ``crash`` → HTTP 500; ``down = True`` fails every call with 500.
The webhook blocks ``secret-plan`` as ``dlp`` and flags ``salary``. Calls are counted and kept for asserts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.support.ports import free_port

WEBHOOK_SECRET = "hook-secret"


class FakeGuard:
    def __init__(self, *, slow_s: float = 3.0) -> None:
        self.slow_s = slow_s
        self.down = False
        self.calls: list[dict[str, Any]] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        text = body["messages"][-1]["content"]
        if self.down or "crash" in text:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if "slowly" in text:
            await asyncio.sleep(self.slow_s)
        response = body["messages"][-1]["role"] == "assistant"
        if "bomb" in text:
            verdict = "Safety: Unsafe\nCategories: Violent"
        elif "gossip" in text:
            verdict = "Safety: Controversial\nCategories: Politically Sensitive Topics"
        else:
            verdict = "Safety: Safe\nCategories: None"
        if response:
            verdict += "\nRefusal: No"
        message = {"role": "assistant", "content": verdict}
        return web.json_response(
            {"id": "g", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        )

    async def _hook(self, request: web.Request) -> web.Response:
        if request.headers.get("authorization") != f"Bearer {WEBHOOK_SECRET}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        self.calls.append(body)
        if self.down:
            return web.json_response({"error": "down"}, status=500)
        text = body["text"]
        if "secret-plan" in text:
            return web.json_response({"action": "block", "category": "dlp"})
        if "salary" in text:
            return web.json_response({"action": "flag", "category": "hr"})
        return web.json_response({"action": "allow"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/hook", self._hook)
        return app


@contextmanager
def running_guard(**kwargs: Any) -> Iterator[FakeGuard]:
    """The fake on its own thread and loop, so it serves a gateway running in another thread."""
    guard = FakeGuard(**kwargs)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(guard.app(), handle_signals=False, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", guard.port).start()
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True, name="fake-guard")
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    if not started.wait(10):
        raise RuntimeError("fake guard did not start")
    try:
        yield guard
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""A fake vLLM engine: a real HTTP server that replays vLLM 0.32's OpenAI wire format with scripted outputs.

In-process: ``async with FakeEngine(...) as fe`` (on the running loop) or ``with FakeEngine(...) as fe`` (in a
thread of its own, for synchronous clients). As a process, for benchmarks:
``python -m tests.fakes.engine --port 8000 --rate 0 --tokens 256``.

A request picks its script by a ``[[script:NAME]]`` tag in the last user message (or the completion prompt),
else by the exact text of that message in ``prompt_scripts``, else ``default_script``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import msgspec

from tests.fakes import wire
from tests.fakes.generation import Generation, RequestRecord, Stats
from tests.fakes.httpserver import Exchange, HttpServer, Request
from tests.fakes.script import (
    Script,
    chat_prompt_tokens,
    count_tokens,
    last_user_text,
    plan,
    script_tag,
)
from tests.fakes.vectors import embed, to_base64

DEFAULT_MODEL: Final = "Qwen/Qwen3-8B"
_METRICS_CONTENT_TYPE: Final = "text/plain; version=1.0.0; charset=utf-8"
_GUARDED_PREFIX: Final = ("/v1", "/v2", "/inference", "/cohere")
_decode = msgspec.json.Decoder().decode


class _RequestError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class FakeEngine:
    """The fake engine. Scripts, rate and api key may be changed between requests; counters are read-only."""

    def __init__(
        self,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        embedding_models: Sequence[str] = (),
        embedding_dim: int = 384,
        api_key: str | None = None,
        default_script: Script | None = None,
        scripts: Mapping[str, Script] | None = None,
        prompt_scripts: Mapping[str, Script] | None = None,
        rate: float = 0.0,
        burst: int = 1,
        reasoning_parser: bool = True,
        system_fingerprint: str | None = wire.DEFAULT_SYSTEM_FINGERPRINT,
        max_model_len: int = 40960,
        root: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_limit: int = 1000,
    ) -> None:
        if not models and not embedding_models:
            raise ValueError("at least one served model name is needed")
        self.models = tuple(models)
        # served by the pooling runner (--runner pooling): /v1/embeddings only
        self.embedding_models = tuple(embedding_models)
        self.embedding_dim = embedding_dim
        self.api_key = api_key
        self.default_script = default_script or Script.of("Hello from the fake engine.")
        self.scripts: dict[str, Script] = dict(scripts or {})
        self.prompt_scripts: dict[str, Script] = dict(prompt_scripts or {})
        self.rate = rate
        self.burst = max(1, burst)
        self.reasoning_parser = reasoning_parser
        self.system_fingerprint = system_fingerprint
        self.max_model_len = max_model_len
        self.root = root or self.served[0]
        self.host = host
        self.port = port
        self.requests: deque[RequestRecord] = deque(maxlen=record_limit)
        self._stats = Stats()
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    @property
    def served(self) -> tuple[str, ...]:
        """Every model name the fake serves, generation models first."""
        return self.models + self.embedding_models

    # -- observability ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def requests_total(self) -> int:
        """``/v1`` requests received (models and generations)."""
        return self._stats.requests_total

    @property
    def aborted_total(self) -> int:
        """Generation requests whose client closed the connection before the response was complete."""
        return self._stats.aborted_total

    @property
    def completed_total(self) -> int:
        return self._stats.completed_total

    @property
    def running(self) -> int:
        """Generation requests in progress (what ``vllm:num_requests_running`` reports)."""
        return self._stats.running

    @property
    def last_request(self) -> RequestRecord:
        return self.requests[-1]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised inside the fake itself: a test should find none."""
        return self._server.errors if self._server is not None else []

    def reset(self) -> None:
        self.requests.clear()
        self._stats = Stats(running=self._stats.running)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 2.0) -> float:
        """Wait until ``predicate()`` holds; returns the monotonic time it was seen to hold."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake engine condition not met")
            await asyncio.sleep(0.002)
        return time.monotonic()

    def wait_until_blocking(self, predicate: Callable[[], bool], within: float = 2.0) -> float:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("fake engine condition not met")
            time.sleep(0.002)
        return time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = HttpServer(self._handle)
        self.port = await self._server.start(self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def __aenter__(self) -> FakeEngine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> FakeEngine:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._thread_main, args=(ready, failure), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("fake engine did not start")
        if failure:
            raise failure[0]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread_loop is not None and self._thread_stop is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._thread_stop.wait()
            await self.stop()

        asyncio.run(serve())

    # -- routing ------------------------------------------------------------------------------------------
    async def _handle(self, req: Request, ex: Exchange) -> None:
        if req.path == "/health":
            await ex.send(200, b"", content_type=None)
            return
        if req.path == "/metrics":
            await ex.send(200, self._metrics_text().encode(), content_type=_METRICS_CONTENT_TYPE)
            return
        if req.path == "/version":
            await ex.send(200, wire.encode({"version": wire.VLLM_VERSION}))
            return
        record: RequestRecord | None = None
        if req.path.startswith("/v1"):
            record = self._record(req)
        try:
            if req.path.startswith(_GUARDED_PREFIX) and not self._authorized(req):
                raise _RequestError(401, wire.UNAUTHORIZED_BODY)
            route = self._route(req.method, req.path)
            if record is not None:
                record.status = 200
            await route(req, ex, record)
        except _RequestError as err:
            if record is not None:
                record.status = err.status
            await ex.send(err.status, err.body)
        if record is not None:
            record.finished_at = time.monotonic()

    def _route(self, method: str, path: str) -> Callable[[Request, Exchange, RequestRecord | None], Any]:
        routes: dict[str, tuple[str, Callable[[Request, Exchange, RequestRecord | None], Any]]] = {
            "/v1/models": ("GET", self._models),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
        }
        if path not in routes:
            raise _RequestError(404, b'{"detail":"Not Found"}')
        want, handler = routes[path]
        if method != want:
            raise _RequestError(405, b'{"detail":"Method Not Allowed"}')
        return handler

    def _record(self, req: Request) -> RequestRecord:
        self._stats.requests_total += 1
        try:
            parsed: Any = _decode(req.body) if req.body else None
        except msgspec.DecodeError:
            parsed = None
        record = RequestRecord(req.method, req.path, dict(req.headers), req.body, parsed, req.received_at)
        self.requests.append(record)
        return record

    def _authorized(self, req: Request) -> bool:
        # AuthenticationMiddleware: compare sha256 digests of "Bearer <token>"'s token in constant time
        if not self.api_key:
            return True
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        want = hashlib.sha256(self.api_key.encode()).digest()
        return secrets.compare_digest(hashlib.sha256(token.encode()).digest(), want)

    # -- /v1/models ---------------------------------------------------------------------------------------
    async def _models(self, req: Request, ex: Exchange, record: RequestRecord | None) -> None:
        body = wire.model_list(self.served, self.root, self.max_model_len, wire.now())
        await ex.send(200, wire.encode(body))

    # -- generation ---------------------------------------------------------------------------------------
    def _parse_generation(self, req: Request, required: str) -> dict[str, Any]:
        media_type = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise _RequestError(
                400,
                wire.error_body(
                    "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
                    400,
                    "Bad Request",
                ),
            )
        try:
            body = _decode(req.body)
        except msgspec.DecodeError as exc:
            raise _RequestError(
                400,
                wire.error_body(
                    f"1 validation error:\n  JSON decode error: {exc}", 400, "Bad Request", "body"
                ),
            ) from exc
        if not isinstance(body, dict):
            raise _RequestError(
                400,
                wire.error_body(
                    "1 validation error:\n  Input should be an object", 400, "Bad Request", "body"
                ),
            )
        if required not in body:
            message = (
                f"1 validation error:\n  {{'type': 'missing', 'loc': ('body', '{required}'), "
                f"'msg': 'Field required'}}"
            )
            raise _RequestError(400, wire.error_body(message, 400, "Bad Request", f"body.{required}"))
        model = body.get("model")
        if model and model not in self.served:
            message = f"The model `{model}` does not exist. Valid aliases: {', '.join(self.served)}."
            raise _RequestError(404, wire.error_body(message, 404, "NotFoundError", "model"))
        return body

    def _require_runner(self, body: dict[str, Any], embedding: bool, api: str) -> None:
        """A model served by the other runner: vLLM has no handler for the route and answers 501."""
        names = self.embedding_models if embedding else self.models
        if str(body.get("model") or self.served[0]) not in names:
            message = f"The model does not support {api} API"
            raise _RequestError(501, wire.error_body(message, 501, "NotImplementedError"))

    def _pick_script(self, text: str, record: RequestRecord | None) -> Script:
        name = script_tag(text)
        if name is not None:
            script = self.scripts.get(name)
            if script is None:
                raise _RequestError(400, wire.error_body(f"fake engine: no script named {name!r}", 400))
        else:
            script = self.prompt_scripts.get(text)
            name = "prompt" if script is not None else "default"
            script = script or self.default_script
        if record is not None:
            record.script = name
        return script

    async def _chat(self, req: Request, ex: Exchange, record: RequestRecord | None) -> None:
        body = self._parse_generation(req, "messages")
        self._require_runner(body, embedding=False, api="Chat Completions")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _RequestError(
                400, wire.error_body("messages must be a list", 400, "Bad Request", "body.messages")
            )
        script = self._pick_script(last_user_text(messages), record)
        await self._generate(req, ex, record, body, script, chat_prompt_tokens(messages), chat=True)

    async def _completions(self, req: Request, ex: Exchange, record: RequestRecord | None) -> None:
        body = self._parse_generation(req, "prompt")
        self._require_runner(body, embedding=False, api="Completions")
        prompt = body["prompt"]
        if isinstance(prompt, list):
            if all(isinstance(t, int) for t in prompt):
                prompt_tokens, text = len(prompt), ""
            else:
                text = "".join(str(p) for p in prompt)
                prompt_tokens = count_tokens(text)
        else:
            text = str(prompt)
            prompt_tokens = count_tokens(text)
        script = self._pick_script(text, record)
        await self._generate(req, ex, record, body, script, prompt_tokens, chat=False)

    async def _generate(
        self,
        req: Request,
        ex: Exchange,
        record: RequestRecord | None,
        body: dict[str, Any],
        script: Script,
        prompt_tokens: int,
        *,
        chat: bool,
    ) -> None:
        if script.response_delay > 0:
            await asyncio.sleep(script.response_delay)
        if script.http_status is not None:
            message = script.error_message or "Injected error"
            raise _RequestError(script.http_status, wire.error_body(message, script.http_status))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        named_tool = isinstance(body.get("tool_choice"), dict)
        the_plan = plan(script, max_tokens if isinstance(max_tokens, int) else None, named_tool)
        prefix = "chatcmpl-" if chat else "cmpl-"
        run = Generation(
            stats=self._stats,
            reasoning_parser=self.reasoning_parser,
            fingerprint=self.system_fingerprint,
            rate=script.rate if script.rate is not None else self.rate,
            burst=self.burst,
            ex=ex,
            record=record,
            script=script,
            plan=the_plan,
            chat=chat,
            chunk_id=prefix + (req.headers.get("x-request-id") or wire.random_uuid()),
            created=wire.now(),
            model=str(body.get("model") or self.models[0]),
            prompt_tokens=prompt_tokens,
        )
        ex.on_abort = run.aborted
        stats = self._stats
        stats.running += 1
        stats.prompt_tokens += prompt_tokens
        try:
            if body.get("stream"):
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                await run.stream(include_usage)
            else:
                await run.full()
        finally:
            stats.running -= 1

    # -- /v1/embeddings -----------------------------------------------------------------------------------
    async def _embeddings(self, req: Request, ex: Exchange, record: RequestRecord | None) -> None:
        body = self._parse_generation(req, "input")
        self._require_runner(body, embedding=True, api="Embeddings")
        model = str(body.get("model") or self.served[0])
        raw = body["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _RequestError(400, wire.error_body("fake engine: only text inputs are served", 400))
        dimensions = body.get("dimensions")
        if dimensions is not None and not (
            isinstance(dimensions, int) and 1 <= dimensions <= self.embedding_dim
        ):
            message = f"Model {model!r} only supports dimensions in range [1, {self.embedding_dim}], got {dimensions}."
            raise _RequestError(400, wire.error_body(message, 400, "BadRequestError"))
        vectors = [embed(text, self.embedding_dim, dimensions) for text in texts]
        encoded: list[list[float] | str] = list(vectors)
        if body.get("encoding_format") == "base64":
            encoded = [to_base64(v) for v in vectors]
        # a BERT tokenizer adds [CLS] and [SEP] to each input
        prompt_tokens = sum(count_tokens(text) + 2 for text in texts)
        self._stats.prompt_tokens += prompt_tokens
        answer = wire.embedding_response(
            f"embd-{wire.random_uuid()}", wire.now(), model, encoded, prompt_tokens
        )
        await ex.send(200, wire.encode(answer))

    # -- /metrics -----------------------------------------------------------------------------------------
    def _metrics_text(self) -> str:
        labels = f'engine="0",model_name="{self.served[0]}"'
        s = self._stats
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(s.running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} 0.0",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{labels}}} {float(s.prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {float(s.generation_tokens)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in ("stop", "length", "abort", "error", "repetition"):
            lines.append(
                f'vllm:request_success_total{{engine="0",finished_reason="{reason}",'
                f'model_name="{self.served[0]}"}} {float(s.finished[reason])}'
            )
        return "\n".join(lines) + "\n"


# -- command line -------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.engine", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    p.add_argument("--model", action="append", dest="models", help="served model name (repeatable)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--rate", type=float, default=0.0, help="tokens/s per stream; 0 = as fast as possible")
    p.add_argument("--burst", type=int, default=1, help="at rate 0, chunks per stream per loop turn")
    p.add_argument("--tokens", type=int, default=64, help="content tokens of the default script")
    p.add_argument("--reasoning-tokens", type=int, default=0, help="reasoning tokens before the content")
    p.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first token")
    p.add_argument("--no-reasoning-parser", action="store_true", help="as vLLM without --reasoning-parser")
    p.add_argument("--no-uvloop", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    engine = FakeEngine(
        models=tuple(args.models or (DEFAULT_MODEL,)),
        api_key=args.api_key,
        default_script=Script.lorem(
            args.tokens, reasoning_tokens=args.reasoning_tokens, first_token_delay=args.first_token_delay
        ),
        rate=args.rate,
        burst=args.burst,
        reasoning_parser=not args.no_reasoning_parser,
        host=args.host,
        port=args.port,
        record_limit=100,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await engine.start()
        print(f"fake vLLM engine listening on {engine.url}", flush=True)
        await stop.wait()
        await engine.stop()

    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.run(serve())
            return
    asyncio.run(serve())


__all__ = ["DEFAULT_MODEL", "FakeEngine", "RequestRecord", "main"]


if __name__ == "__main__":
    main(sys.argv[1:])

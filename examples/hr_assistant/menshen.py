"""Menshen's OpenAI-compatible API through the official ``openai`` SDK, handled as an app should.

A 429 waits for ``Retry-After`` (a bounded number of times, said on stderr); a 401 fetches a new token once;
any other refusal becomes an ``AppError`` with a one-line message. The SDK's own retries are off so that the
app decides, and says, what happens.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TextIO, TypeVar

import openai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from examples.hr_assistant.errors import AppError
from examples.hr_assistant.tokens import TokenSource

T = TypeVar("T")
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_MAX_WAIT_S: Final = 60.0
_FALLBACK_WAIT_S: Final = 1.0


class Menshen:
    def __init__(
        self,
        gateway: str,
        tokens: TokenSource,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        timeout: float = 120.0,
        stderr: TextIO | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = gateway.rstrip("/") + "/v1"
        self._tokens = tokens
        self._max_retries = max_retries
        self._max_wait_s = max_wait_s
        self._timeout = timeout
        self._stderr = stderr
        self._sleep = sleep
        self._sdk: openai.OpenAI | None = None

    def embed(self, model: str, texts: Sequence[str], batch_size: int = 16) -> list[list[float]]:
        """One vector per text, in order, ``batch_size`` texts a request."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])

            def request(sdk: openai.OpenAI, batch: list[str] = batch) -> CreateEmbeddingResponse:
                return sdk.embeddings.create(model=model, input=batch, encoding_format="float")

            response = self._call(request)
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise AppError(f"Menshen returned {len(data)} embeddings for {len(batch)} texts")
            vectors.extend(list(d.embedding) for d in data)
        return vectors

    def stream_chat(
        self, model: str, messages: list[ChatCompletionMessageParam], max_tokens: int
    ) -> Iterator[ChatCompletionChunk]:
        """The chunks of a streamed chat completion; refusals come before the first chunk."""
        stream = self._call(
            lambda sdk: sdk.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=True
            )
        )
        try:
            yield from stream
        except openai.APIError as exc:
            raise AppError(f"the answer stream failed: {_describe(exc)}") from exc
        finally:
            stream.close()

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()

    def _client(self, token: str) -> openai.OpenAI:
        if self._sdk is None:
            self._sdk = openai.OpenAI(
                base_url=self.base_url, api_key=token, max_retries=0, timeout=self._timeout
            )
        elif self._sdk.api_key != token:
            self._sdk = self._sdk.with_options(api_key=token)
        return self._sdk

    def _call(self, request: Callable[[openai.OpenAI], T]) -> T:
        refetched = False
        waits = 0
        while True:
            token = self._tokens.access_token()
            try:
                return request(self._client(token))
            except openai.AuthenticationError as exc:
                if refetched:
                    raise AppError(f"Menshen refused a fresh access token: {_describe(exc)}") from exc
                # Revoked keys or a clock skew: one new token is worth a try, a loop is not.
                self._tokens.refetch()
                refetched = True
            except openai.RateLimitError as exc:
                wait = _retry_after(exc.response.headers.get("retry-after"))
                if waits >= self._max_retries or wait > self._max_wait_s:
                    raise AppError(f"Menshen is still rate limiting this app: {_describe(exc)}") from exc
                waits += 1
                self._say(
                    f"hr-assistant: rate limited by Menshen (429); waiting {wait:g} s "
                    f"(retry {waits} of {self._max_retries})"
                )
                self._sleep(wait)
            except openai.APIStatusError as exc:
                raise AppError(f"Menshen refused the request: {_describe(exc)}") from exc
            except openai.APIConnectionError as exc:
                raise AppError(f"cannot reach Menshen at {self.base_url} ({type(exc).__name__})") from exc

    def _say(self, line: str) -> None:
        print(line, file=self._stderr or sys.stderr, flush=True)


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header; the HTTP-date form and garbage fall back to one second."""
    try:
        seconds = float(value) if value is not None else _FALLBACK_WAIT_S
    except ValueError:
        return _FALLBACK_WAIT_S
    return max(0.0, seconds)


def _describe(exc: openai.APIError) -> str:
    status = f"{exc.status_code} " if isinstance(exc, openai.APIStatusError) else ""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return f"{status}{message or exc.message}".replace("\n", " ")

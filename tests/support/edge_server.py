"""The gateway as ``gateway serve`` configures it, with raw-socket helpers for the edge tests."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.app import AppParts
from gateway.telemetry.logging import configure_logging
from tests.support.gateway import RunningGateway, gateway_settings, run_gateway
from tests.support.logcapture import Logs, RawCapture, saved_logging


@contextmanager
def serve_edge(
    tmp: Path, upstream: str, parts: AppParts | None = None, **overrides: Any
) -> Iterator[RunningGateway]:
    """``run_gateway`` (which runs ``gateway serve``'s uvicorn configuration) with settings built here."""
    with run_gateway(gateway_settings(tmp, upstream, **overrides), parts) as running:
        yield running


def connect(gateway: RunningGateway, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(
        (gateway.settings.server.host, gateway.settings.server.port), timeout=timeout
    )


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


__all__ = ["capture_logs", "connect", "read_all", "serve_edge", "status_of"]


@contextmanager
def capture_logs() -> Iterator[Logs]:
    """The gateway's logging as ``gateway serve`` sets it up, into a buffer, plus a raw root handler."""
    with saved_logging():
        rendered, raw = io.StringIO(), RawCapture()
        configure_logging("DEBUG", stream=rendered)
        logging.getLogger().addHandler(raw)
        yield Logs(raw, rendered)
